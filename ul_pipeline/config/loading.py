"""Loading an experiment: schema <- configs/base.yaml <- experiment YAML (or sweep point) <- overrides.

An unknown key or a wrong type fails with a `ConfigError` that names the key and the file it came from.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import ul_pipeline.config.sweeps as sweeps
from ul_pipeline.config.schema import CONFIG_DIR, ConfigError, ExperimentConfig, _merge_one
from ul_pipeline.config.validation import validate


def experiment_names(config_dir: Path | str = CONFIG_DIR) -> list[str]:
    """Experiments in `config_dir/experiments/*.yaml` by file name; a sweep file gives its points instead.

    A sweep file (one with a `sweep:` section, see ul_pipeline.config.sweeps) contributes its point keys
    (`NAME:c_lf=1.3`, `NAME:normal_prior`) in sweep order, never its own name.
    """
    names = []
    for path in sweeps.experiment_files(config_dir):
        section = sweeps.read_section(path)
        points = [] if section is None else sweeps.expand(path.stem, section, str(path)).points
        names += [p.key for p in points] if points else [path.stem]
    return names


def load_config(
    experiment: str | Path | None = None,
    overrides: list[str] | dict | None = None,
    config_dir: Path | str = CONFIG_DIR,
) -> DictConfig:
    """Merge schema <- configs/base.yaml <- experiment YAML <- overrides, validate, and freeze.

    `experiment` is a name under `configs/experiments/`, a sweep point `NAME:label` (the file's base
    plus the point's overrides, named after the point) or a path to a YAML file. A file's `sweep:`
    section is dropped before merging. `overrides` are dotlist strings (`stage1.c_lf=1.7`) or a nested dict.
    """
    config_dir = Path(config_dir)
    cfg = OmegaConf.structured(ExperimentConfig)
    OmegaConf.set_struct(cfg, True)
    base = config_dir / "base.yaml"
    if base.exists():
        cfg = _merge_one(cfg, _read_yaml(base), str(base))
    if experiment is not None:
        path, label = Path(experiment), None
        if path.suffix not in (".yaml", ".yml"):
            name, label = sweeps.split_point_key(str(experiment))
            path = config_dir / "experiments" / f"{name}.yaml"
        if not path.exists():
            known = ", ".join(experiment_names(config_dir)) or "none"
            raise ConfigError(f"unknown experiment '{experiment}': no file {path} (known: {known})")
        raw = _read_yaml(path)
        raw.pop(sweeps.SECTION, None)
        cfg = _merge_one(cfg, raw, str(path))
        if label is not None:
            point = sweeps.find_point(path.stem, label, config_dir)
            cfg = _merge_one(cfg, sweeps.nested(point.overrides), f"{path} (sweep point {point.key})")
            cfg.name = point.key
        elif "name" not in raw:
            cfg.name = path.stem
    if overrides:
        if isinstance(overrides, dict):
            other = OmegaConf.create(overrides)
        else:
            try:
                other = OmegaConf.from_dotlist(list(overrides))
            except OmegaConfBaseException as e:
                raise ConfigError(f"command-line overrides: {e}") from None
        cfg = _merge_one(cfg, other, "overrides")
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def from_dict(d: dict) -> DictConfig:
    """Rebuild a validated, frozen config from a resolved dict (as stored in checkpoints)."""
    cfg = _merge_one(OmegaConf.structured(ExperimentConfig), d, "stored config")
    validate(cfg, stored=True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _read_yaml(path: Path) -> DictConfig:
    """A config file as a mapping; a syntax error, duplicate keys or a top-level list is a ConfigError naming it."""
    import yaml

    try:
        raw = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: an experiment is a YAML mapping of config keys, got a {type(raw).__name__}")
    return raw
