"""Configuration: the schema (one dataclass per component), loading (base -> experiment -> overrides) and sweeps.

Every hyper-parameter lives once, in `schema.py`, with its meaning and units. `loading.py` merges
`configs/base.yaml`, an experiment YAML (or a sweep point) and overrides, validates and freezes;
`sweeps.py` expands an experiment's `sweep:` section into named points.
"""

from ul_pipeline.config.loading import experiment_names, from_dict, load_config
from ul_pipeline.config.schema import (CONFIG_DIR, DATA_SOURCES, VIDEO_SOURCES, ComputeConfig, ConfigError, DataConfig,
                                       EncodeConfig, EvalConfig, ExperimentConfig, SampleConfig, Stage1Config,
                                       Stage2Config, TrainConfig, config_hash, sample_shape, to_dict,
                                       to_yaml)
from ul_pipeline.config.validation import validate
from ul_pipeline.config.sweeps import Sweep, SweepPoint, load_sweep

__all__ = ["CONFIG_DIR", "DATA_SOURCES", "VIDEO_SOURCES", "ComputeConfig", "ConfigError", "DataConfig", "EncodeConfig",
           "EvalConfig", "ExperimentConfig", "SampleConfig", "Stage1Config", "Stage2Config", "Sweep", "SweepPoint",
           "TrainConfig", "config_hash", "experiment_names", "from_dict", "load_config", "load_sweep", "sample_shape",
           "to_dict", "to_yaml", "validate"]
