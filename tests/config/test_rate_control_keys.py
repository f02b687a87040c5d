"""The rate controller's switches as users mistype them: each wrong value is a ConfigError naming its key, and a
run switched between the `integral` and `pi` laws never resumes the other law's checkpoint."""

from __future__ import annotations

import pytest

from ul_pipeline.config import ConfigError, load_config, to_dict
from ul_pipeline.config.loading import from_dict
from ul_pipeline.train.checkpoint import CheckpointError, check_resumable
from ul_pipeline.versioning import mismatches

RATE_MATCHED = ["stage1.prior=normal", "stage1.encoder_noise=learned", "stage1.target_bits_per_pixel=0.3"]


@pytest.mark.parametrize("override, key", [
    ("stage1.rate_gain=inf", "stage1.rate_gain"),  # was accepted: log beta += inf * 0 is NaN, beta NaN
    ("stage1.target_bits_per_pixel=inf", "stage1.target_bits_per_pixel"),  # was accepted: error (r - inf) / inf
    ("stage1.rate_gain=0", "stage1.rate_gain"), ("stage1.rate_gain=-0.05", "stage1.rate_gain"),
    ("stage1.rate_gain=nan", "stage1.rate_gain"), ("stage1.target_bits_per_pixel=-0.1", "stage1.target_bits_per_pixel"),
    ("stage1.rate_control=PI", "stage1.rate_control"), ("stage1.rate_control=''", "stage1.rate_control"),
])
def test_a_wrong_rate_setting_is_refused_naming_its_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("smoke", RATE_MATCHED + [override])


@pytest.mark.parametrize("old, new", [("integral", "pi"), ("pi", "integral")])
def test_switching_the_law_is_noticed_on_resume_and_on_reuse(old, new):
    """(held already) The controller's state differs between the laws; the switch is a config difference."""
    before = to_dict(load_config("smoke", RATE_MATCHED + [f"stage1.rate_control={old}"]))
    after = to_dict(load_config("smoke", RATE_MATCHED + [f"stage1.rate_control={new}"]))
    with pytest.raises(CheckpointError, match="stage1.rate_control"):
        check_resumable({"config": before}, after, "run/last.pt", "stage1")
    assert any(m.startswith("stage1.rate_control") for m in
               mismatches({"config": before, "stage_code_version": "v"}, after, "v", {}, "stage1"))


def test_the_pi_law_without_a_target_is_refused_naming_the_key():
    """It was accepted and did nothing: with target 0 no rate law is built, so beta stayed fixed unnoticed."""
    with pytest.raises(ConfigError, match=r"stage1\.rate_control.*target_bits_per_pixel is 0"):
        load_config("smoke", ["stage1.rate_control=pi"])
    assert load_config("smoke", ["stage1.rate_control=integral"]).stage1.target_bits_per_pixel == 0  # the default


def test_a_checkpoint_trained_with_pi_and_no_target_still_loads():
    """A run trained before the refusal (pi at target 0: beta fixed) stored that config; its checkpoint must still
    load for sampling and evaluation. Only a new config is refused."""
    stored = to_dict(load_config("smoke"))
    stored["stage1"]["rate_control"] = "pi"
    cfg = from_dict(stored)
    assert cfg.stage1.rate_control == "pi" and cfg.stage1.target_bits_per_pixel == 0
    with pytest.raises(ConfigError, match=r"stage1\.rate_control"):
        load_config("smoke", ["stage1.rate_control=pi"])
