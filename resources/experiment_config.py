"""Experiment configs for assets: the CLI's `load_config`, with this deployment's overrides."""

from __future__ import annotations

from typing import Iterable, Optional

from dagster import ConfigurableResource
from omegaconf import DictConfig
from pydantic import Field

from ul_pipeline.config import CONFIG_DIR, load_config


class ExperimentConfigResource(ConfigurableResource):
    """Loads `configs/experiments/<partition>.yaml` merged over base.yaml, then `overrides` (dotlist)."""

    config_dir: Optional[str] = Field(default=None, description="folder with base.yaml and experiments/; "
                                                                "None = $UL_CONFIG_DIR, else the configs the "
                                                                "installed package carries (a clone: configs/)")
    overrides: list[str] = Field(default=[], description="dotlist overrides for every experiment, "
                                                         "e.g. ['eval.fid=false']")

    def load(self, experiment: str, extra_overrides: Iterable[str] = ()) -> DictConfig:
        """The resolved, validated, frozen config; ConfigError names a bad key."""
        overrides = [*self.overrides, *extra_overrides]
        return load_config(experiment, overrides or None, config_dir=self.config_dir or CONFIG_DIR)
