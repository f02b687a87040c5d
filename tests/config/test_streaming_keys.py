"""The streaming keys are range-checked when the config is loaded, naming the key."""

import pytest

from ul_pipeline.config import ConfigError, load_config


def test_streaming_keys_out_of_range_are_refused_naming_them():
    with pytest.raises(ConfigError, match="'data.shuffle_buffer': must be >= 1"):
        load_config("smoke", ["data.shuffle_buffer=0"])
    with pytest.raises(ConfigError, match="'compute.workers': must be >= 0"):
        load_config("smoke", ["compute.workers=-1"])
    assert load_config("smoke", ["data.in_memory=false", "compute.workers=2"]).compute.workers == 2
