"""Sweeps: an experiment YAML whose `sweep:` section expands into named points, each its own experiment.

```yaml
sweep:
  grid: {stage1.c_lf: [1.3, 1.5, 3.0]}       # cartesian product of dotted config keys
  variants:                                 # named points: dotted overrides on the file's base
    normal_prior: {stage1.prior: normal}
```

A point's key is `NAME:c_lf=1.3` (grid; several keys as `NAME:c_lf=1.3:bias=5.0`, each key shortened
to its shortest unique dotted suffix) or `NAME:normal_prior` (variant). `load_config(point_key)`
loads the file, drops `sweep:`, applies the point's overrides and names the config after the point.
Point keys are Dagster partition keys and folder names (`{root}/{point}/...`, also on S3), so they
only hold `[A-Za-z0-9_.=:-]`: no `,` `|` `[` `]` (Dagster's partition-selection syntax), no `/`,
no spaces. The sweep file itself (its base) is not a point.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ul_pipeline.config.identity import without_added_defaults
from ul_pipeline.config.schema import CONFIG_DIR, ConfigError, ExperimentConfig, config_hash
from ul_pipeline.config.seeds import SeedPlan, expand_seeds

SECTION = "sweep"  # the top-level YAML key; not part of the config schema
POINT_SEP = ":"  # between the sweep name and the point, and between grid assignments
SAFE_TEXT = re.compile(r"^[A-Za-z0-9_.-]+$")  # variant names and formatted grid values
SHARDS_ONLY_DATA_KEYS = ("in_memory", "shuffle_buffer")  # data.* keys that change loading, not the shards


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: its partition key, short label and the dotted overrides it applies."""

    key: str  # NAME:label, the partition key and folder name
    label: str  # c_lf=1.3 (grid) or normal_prior (variant)
    overrides: dict[str, Any]  # dotted config key -> value, merged over the sweep file's base
    variant: Optional[str] = None  # the variant's name; None for a grid point
    waits_for: Optional[str] = None  # a seed point whose rate target is this point's committed rate (config/seeds.py)
    rate_from: Optional[str] = None  # the point whose committed rate is this point's target (waited for or not)


@dataclass(frozen=True)
class Sweep:
    name: str
    origin: str  # the YAML file, for messages
    grid_keys: dict[str, str]  # dotted grid key -> its short name in point keys (c_lf)
    points: tuple[SweepPoint, ...]  # grid points in product order, then variants in file order
    compare: tuple[tuple[str, str, str], ...] = ()  # (label a, label b, why): planned paired comparisons
    repeats: tuple[tuple[str, str], ...] = ()  # (label, its training-seed repeat): the seed spread
    seeds: Optional[SeedPlan] = None  # paired training seeds and the comparisons judged over them


def split_point_key(key: str) -> tuple[str, Optional[str]]:
    """`NAME:label` -> (NAME, label); a plain experiment name -> (name, None)."""
    name, sep, label = str(key).partition(POINT_SEP)
    return name, (label if sep else None)


def experiment_files(config_dir: Path | str = CONFIG_DIR) -> list[Path]:
    return sorted((Path(config_dir) / "experiments").glob("*.yaml"))


def read_section(path: Path) -> Optional[dict]:
    """The raw `sweep:` section of an experiment YAML, or None when it has none."""
    raw = OmegaConf.load(path)
    if not isinstance(raw, DictConfig) or SECTION not in raw:
        return None
    section = OmegaConf.to_container(raw[SECTION], resolve=True)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: '{SECTION}' must be a mapping with 'grid' and/or 'variants'")
    return section


def sweep_names(config_dir: Path | str = CONFIG_DIR) -> list[str]:
    """Names of the experiment files that hold a `sweep:` section, sorted."""
    return [p.stem for p in experiment_files(config_dir) if read_section(p) is not None]


def load_sweep(name: str, config_dir: Path | str = CONFIG_DIR) -> Sweep:
    """The sweep in `config_dir/experiments/NAME.yaml` (or a YAML path), expanded and validated.

    ConfigError names the file and the offending key.
    """
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else Path(config_dir) / "experiments" / f"{name}.yaml"
    name = path.stem
    if not path.exists():
        raise ConfigError(f"unknown sweep '{name}': no file {path} (sweeps: "
                          f"{', '.join(sweep_names(config_dir)) or 'none'})")
    section = read_section(path)
    if section is None:
        raise ConfigError(f"{path}: experiment '{name}' has no '{SECTION}:' section, so it has no points")
    return expand(name, section, str(path))


def sweep_points(name: str, config_dir: Path | str = CONFIG_DIR) -> dict[str, dict[str, Any]]:
    """{point key: dotted overrides} of sweep NAME, in sweep order."""
    return {p.key: p.overrides for p in load_sweep(name, config_dir).points}


def find_point(name: str, label: str, config_dir: Path | str = CONFIG_DIR) -> SweepPoint:
    """The point `NAME:label` of sweep NAME; ConfigError lists the sweep's points when it has no such one."""
    sweep = load_sweep(name, config_dir)
    for p in sweep.points:
        if p.label == label:
            if p.waits_for:
                raise ConfigError(f"{sweep.origin}: point '{p.key}' takes its rate target from {p.waits_for}'s "
                                  f"committed result, which does not exist yet: run {name}{POINT_SEP}{p.waits_for} first")
            return p
    raise ConfigError(f"{sweep.origin}: sweep '{name}' has no point '{name}{POINT_SEP}{label}' "
                      f"(points: {', '.join(p.key for p in sweep.points)})")


def expand(name: str, section: dict, origin: str) -> Sweep:
    """Points of one `sweep:` section: the grid's cartesian product, then the named variants."""
    if POINT_SEP in name:
        raise ConfigError(f"{origin}: a sweep's file name may not contain '{POINT_SEP}'")
    unknown = set(section) - {"grid", "variants", "compare", "repeats", "seeds", "paired"}
    if unknown:
        raise ConfigError(f"{origin}: {SECTION}: unknown key(s) {sorted(unknown)} "
                          "(allowed: grid, variants, compare, repeats, seeds, paired)")
    grid, variants = section.get("grid") or {}, section.get("variants") or {}
    if not isinstance(grid, dict) or not isinstance(variants, dict):
        raise ConfigError(f"{origin}: {SECTION}.grid and {SECTION}.variants must be mappings")
    if not grid and not variants:
        raise ConfigError(f"{origin}: {SECTION}: needs a non-empty 'grid' or 'variants'")
    for key, values in grid.items():
        _check_key(key, f"{origin}: {SECTION}.grid")
        if not isinstance(values, list):
            raise ConfigError(f"{origin}: {SECTION}.grid.{key}: must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{origin}: {SECTION}.grid.{key}: empty list (give at least one value)")
    short = shortest_suffixes(list(grid))
    points = []
    for combo in itertools.product(*grid.values()) if grid else ():  # no grid: variants only, no empty point
        overrides = dict(zip(grid, combo))
        label = POINT_SEP.join(f"{short[k]}={_format(v, f'{origin}: {SECTION}.grid.{k}')}"
                               for k, v in overrides.items())
        points.append(SweepPoint(f"{name}{POINT_SEP}{label}", label, overrides))
    for variant, overrides in variants.items():
        where = f"{origin}: {SECTION}.variants.{variant}"
        if not SAFE_TEXT.match(str(variant)):
            raise ConfigError(f"{where}: a variant name may only hold letters, digits, '_', '.' and '-'")
        if not isinstance(overrides, dict) or not overrides:
            raise ConfigError(f"{where}: must be a non-empty mapping of dotted config keys to values")
        for key in overrides:
            _check_key(key, where)
        points.append(SweepPoint(f"{name}{POINT_SEP}{variant}", str(variant), dict(overrides), str(variant)))
    plan = None
    if section.get("seeds") is not None:
        plan, extra = expand_seeds(section["seeds"], {p.label: p.overrides for p in points if p.variant},
                                   origin, Path(origin).resolve().parents[2])
        for label, overrides, waits_for, rate_from in extra:
            points.append(SweepPoint(f"{name}{POINT_SEP}{label}", label, overrides, label, waits_for, rate_from))
    seen = set()
    for p in points:
        if p.key in seen:
            raise ConfigError(f"{origin}: {SECTION}: point '{p.key}' appears twice")
        seen.add(p.key)
    labels = {p.label for p in points}
    compare = _pairs(section.get("compare"), labels, f"{origin}: {SECTION}.compare", with_why=True)
    repeats = _pairs(section.get("repeats"), labels, f"{origin}: {SECTION}.repeats", with_why=False)
    paired = _pairs(section.get("paired"), set(plan.arms) if plan else set(),
                    f"{origin}: {SECTION}.paired (arms of sweep.seeds)", with_why=True)
    if plan is not None:
        plan = SeedPlan(plan.n, plan.arms, paired, plan.results, plan.rate_of)
    return Sweep(name, origin, short, tuple(points), compare, repeats, plan)


def _pairs(entries: Any, labels: set[str], where: str, with_why: bool) -> tuple:
    """The [a, b(, why)] entries of one list: two points each, a pair at most once (in either order)."""
    if entries is not None and not isinstance(entries, list):
        raise ConfigError(f"{where}: a list of [a, b{', why' if with_why else ''}] entries, got {entries!r}")
    pairs, seen = [], set()
    for entry in entries or []:
        pair = _pair(entry, labels, where, with_why)
        if pair[0] == pair[1]:
            raise ConfigError(f"{where}: [{pair[0]}, {pair[1]}] compares a point with itself")
        if frozenset(pair[:2]) in seen:
            raise ConfigError(f"{where}: the pair [{pair[0]}, {pair[1]}] is listed twice")
        seen.add(frozenset(pair[:2]))
        pairs.append(pair)
    return tuple(pairs)


def _pair(entry: Any, labels: set[str], where: str, with_why: bool) -> tuple:
    """A [a, b(, why)] entry naming two points of the sweep."""
    size = 3 if with_why else 2
    if not isinstance(entry, list) or len(entry) != size:
        raise ConfigError(f"{where}: each entry is [a, b{', why' if with_why else ''}], got {entry!r}")
    unknown = [x for x in entry[:2] if not isinstance(x, str) or x not in labels]  # a list or mapping: unhashable
    if unknown:
        raise ConfigError(f"{where}: {unknown} are not points of this sweep (points: {', '.join(sorted(labels))})")
    return tuple(str(x) for x in entry)


def shortest_suffixes(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest dotted suffix that no other key shares (stage1.c_lf -> c_lf)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = parts[-n:]
            if not any(o != key and o.split(".")[-n:] == suffix for o in keys):
                break
        out[key] = ".".join(suffix)
    return out


def nested(overrides: dict[str, Any]) -> dict:
    """Dotted overrides as a nested mapping ({'stage1.c_lf': 1.3} -> {'stage1': {'c_lf': 1.3}})."""
    out: dict = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def data_sha256(cfg: DictConfig) -> str:
    """sha256 identifying the shards a config's `data` section writes (loader-only keys left out);
    the shard manifest records it (column `data_sha256`). Values are resolved, also those read from
    the environment: another DATA_URI behind `${oc.env:DATA_URI}` is another data set (only this
    digest of them is stored, never the value)."""
    resolved = without_added_defaults({"data": OmegaConf.to_container(cfg.data, resolve=True)})["data"]
    data = {k: v for k, v in resolved.items() if k not in SHARDS_ONLY_DATA_KEYS}
    return config_hash(data)


def data_hash(cfg: DictConfig) -> str:
    """12 hex digits of `data_sha256`: shards live in `{root}/{experiment or sweep}/shards-{data_hash}`."""
    return data_sha256(cfg)[:12]


def _check_key(key: Any, where: str) -> None:
    """A dotted override key must name a key of the schema, and never `name` (the point key is the name)."""
    node: Any = _schema()
    for part in str(key).split("."):
        if not isinstance(node, DictConfig) or part not in node:
            raise ConfigError(f"{where}: unknown config key '{key}'")
        node = node[part]
    if key == "name":
        raise ConfigError(f"{where}: 'name' cannot be swept; a point is named by its key")


@functools.cache
def _schema() -> DictConfig:
    return OmegaConf.structured(ExperimentConfig)


def _format(value: Any, where: str) -> str:
    """A grid value as it appears in a point key (1.3, 1e-05, true, normal)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value).replace("e+", "e")
    else:
        text = str(value)
    if not SAFE_TEXT.match(text):
        raise ConfigError(f"{where}: value {value!r} cannot be part of a point key (letters, digits, '_', '.', "
                          f"'-' only); use a named variant instead")
    return text
