"""Committed study results: each finished point's evaluation and sample features, kept in the repository.

A study takes hours of CPU, more than one machine's life. Each finished point is written under
`results/<sweep>/<label>/` (`result.json` and `generated_features.npy`, plus its two small grids)
and committed, so a fresh clone knows what is done. A committed point is reused when it was made
from the same config (everything but `compute.*`, which says where it ran, not what it computed)
and the same stage code versions (Stage 1, encoding, Stage 2). A code version may also be declared
equivalent to an older one in `results/<sweep>/equivalent_code.json`, each entry naming the test
that showed the outputs equal (a refactor that moved code but not the math); nothing else is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ul_pipeline.config.identity import without_added_defaults
from ul_pipeline.data.storage import write_file_atomic
from ul_pipeline.evaluation.report_files import locked
from ul_pipeline.train.checkpoint import code_version
from ul_pipeline.versioning import json_sha256

RESULT = "result.json"
FEATURES = "generated_features.npy"
GRIDS = ("samples.png", "reconstructions.png")
STAGES = ("stage1", "encode", "stage2")
EQUIVALENT = "equivalent_code.json"


REPORT_METRICS = ("kid_train", "kid_train_se")  # what the study's report reads from every point


class ResultError(ValueError):
    """A committed result that cannot be read as one; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CommittedResult:
    """A point's committed evaluation: metrics, where it came from, and its sample features' path."""

    folder: Path
    record: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record["metrics"]

    @property
    def features_path(self) -> Path:
        return self.folder / FEATURES


def result_config(config: dict) -> dict:
    """What a result depends on: the resolved config without `compute` (where it ran), `name`, and the keys of
    ADDED_KEYS_AT_DEFAULT (ul_pipeline.config.schema) at their default."""
    return without_added_defaults({k: v for k, v in config.items() if k not in ("compute", "name")})


def point_folder(results_dir: str | Path, label: str) -> Path:
    return Path(results_dir) / label


def load_result(results_dir: str | Path, label: str) -> Optional[CommittedResult]:
    """The committed result of a point, or None when there is none (a half-written folder has none)."""
    folder = point_folder(results_dir, label)
    path = folder / RESULT
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: not valid JSON ({e}); restore it (git checkout -- {path}) or run the point again")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise ResultError(f"{path}: no 'metrics' mapping; restore it (git checkout -- {path}) or run the point again")
    return CommittedResult(folder, record)


def load_features(result: CommittedResult, required: tuple[str, ...] = REPORT_METRICS) -> np.ndarray:
    """The point's generated-sample features as float64 (n, d), checked: a 2-d float array of finite values with
    metrics.num_generated rows, and the metrics `required` present as numbers. ResultError names the file."""
    path, m = result.features_path, result.metrics
    missing = [k for k in required if not isinstance(m.get(k), (int, float)) or isinstance(m.get(k), bool)]
    if missing:
        raise ResultError(f"{result.folder / RESULT}: metrics lack {', '.join(missing)} (numbers)")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # absent, truncated, not a .npy
        raise ResultError(f"{path}: cannot be read ({e}); restore it (git checkout -- {path}) or run the point again")
    rows = m.get("num_generated")
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating) or (rows is not None and x.shape[0] != rows):
        raise ResultError(f"{path}: need a float array of shape ({rows or 'n'}, d) (metrics.num_generated rows), "
                          f"got {x.dtype} {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(1))
        raise ResultError(f"{path}: {bad.size} row(s) hold NaN or inf (first: row {bad[0]})")
    return x


def _equivalences(results_dir: Path) -> dict[str, dict[str, set[str]]]:
    """{stage: {new code version: the old ones it computes like}} declared in equivalent_code.json."""
    path = Path(results_dir) / EQUIVALENT
    out: dict[str, dict[str, set[str]]] = {s: {} for s in STAGES}
    if path.exists():
        for entry in json.loads(path.read_text()):
            if not entry.get("evidence"):
                raise ValueError(f"{path}: entry {entry} names no evidence (the test that showed equal outputs)")
            out[entry["stage"]].setdefault(entry["new"], set()).add(entry["old"])
    return out


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ, each with its values (stage1.c_lf 3.0 -> 6.0): the section's name alone
    did not say that it was a seed point's rate target that moved."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1]} {old!r} -> {new!r}"]


def stale_reasons(result: CommittedResult, config: dict, code_versions: dict[str, str]) -> list[str]:
    """Why a committed result may not stand for a run of (config, code versions); [] when it may."""
    reasons = []
    if result.record.get("config_sha256") != json_sha256(result_config(config)):
        keys = _differences(result.record.get("config", {}), result_config(config))
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        reasons.append(f"config differs in {shown or 'its hash'}")
    same = _equivalences(result.folder.parent)
    for stage in STAGES:
        have, want = result.record.get("code_versions", {}).get(stage), code_versions.get(stage)
        if have != want and have not in same.get(stage, {}).get(want, set()):
            reasons.append(f"{stage} code version {have} -> {want}")
    return reasons


def machine() -> dict[str, Any]:
    """What the point ran on: the CPU and its kernel ISA (CPUs with and without AVX-512 or native bf16
    round differently, so two arms of a paired seed are best run on one kind) and the GPU if any."""
    from ul_pipeline.plan.hardware import cpu_isa

    isa = {k: v for k, v in cpu_isa().items() if k != "threads"}
    return {**isa, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def save_result(results_dir: str | Path, label: str, point: str, config: dict, code_versions: dict[str, str],
                metrics: dict[str, Any], evaluation_dir: str | Path, wall_seconds: float | None) -> CommittedResult:
    """Write a point's result folder: features and grids first, result.json last (its presence = done), under a lock
    on the folder, so two exporters of one point leave one run's files, not one's features beside the other's
    metrics; temporary files of an exporter killed mid-write are removed then (a live one would hold the lock)."""
    folder = point_folder(results_dir, label)
    folder.mkdir(parents=True, exist_ok=True)
    evaluation_dir = Path(evaluation_dir)
    record = {
        "point": point, "label": label, "config": result_config(config),
        "config_sha256": json_sha256(result_config(config)), "code_versions": dict(code_versions),
        "commit": code_version(),  # package version + git commit (.dirty for local changes)
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": wall_seconds, "torch_threads": torch.get_num_threads(), "machine": machine(),
        "metrics": {k: v for k, v in metrics.items() if not isinstance(v, str) or not v.startswith("/")},
    }
    text = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    with locked(folder):
        for name in (FEATURES, *GRIDS, RESULT):
            for left in folder.glob(f".{name}.*.tmp"):  # write_file_atomic's `.<name>.<pid>-<random>.tmp`
                left.unlink(missing_ok=True)
        for name in (FEATURES, *GRIDS):
            if (evaluation_dir / name).exists():
                with open(evaluation_dir / name, "rb") as src:
                    write_file_atomic(folder / name, lambda f: shutil.copyfileobj(src, f))
        write_file_atomic(folder / RESULT, lambda f: f.write(text))  # unique temp names: two exporters never share one
    return CommittedResult(folder, record)
