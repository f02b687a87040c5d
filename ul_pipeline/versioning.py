"""What identifies an artifact: stage code versions, config hashes, and which run folder a stage uses.

A stage's code version is a hash of the library sources that stage runs (`STAGE_SOURCES`), not a
constant bumped by hand and not the git commit. A hand-bumped constant is forgotten exactly when
it matters (a "small" fix to a loss), and the commit changes with every README edit; the sources
hash changes when, and only when, the code the stage executes changes. It errs on the side of
retraining: a comment edit in `ul_pipeline/stage1/` counts as a new version of Stage 1.

`choose_run_dir` decides where a training run goes:
  - no checkpoint yet                                  -> the run folder (a new run);
  - an unfinished checkpoint                           -> the run folder (resume, exactly as before);
  - a complete one of the same config, code and inputs -> the run folder (reuse; a longer
                                                          `total_samples` continues it);
  - a complete one that differs in any of them         -> a sibling folder `<run>-<identity>`,
    keyed by the hash of (config, code version, inputs), so the old run stays untouched and
    re-running the new config resumes or reuses its own folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import ul_pipeline
from ul_pipeline.train.checkpoint import RESUMABLE_KEYS, config_differences, load_checkpoint

# the library sources (relative to ul_pipeline/) whose code each stage runs; a folder means its *.py
STAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "shards": ("data/shards.py", "data/manifest.py", "data/codecs.py", "data/sample.py", "data/sources",
               "data/fashion_mnist.py"),
    "stage1": ("stage1", "nets", "diffusion", "train", "evaluation/metrics.py", "data/augment.py", "distributed.py"),
    "encode": ("latents/extract.py", "latents/store.py", "stage1/posterior.py", "stage1/model.py", "distributed.py"),
    "stage2": ("stage2", "nets", "diffusion", "train", "data/augment.py", "distributed.py"),
}
SHORT = 12  # hex digits of a short hash (store paths, run folder suffixes)


def short_hash(sha256: str) -> str:
    """The first SHORT hex digits of a sha256 (enough to tell artifacts of one experiment apart)."""
    return sha256[:SHORT]


def json_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@lru_cache(maxsize=None)
def stage_code_version(stage: str) -> str:
    """Short sha256 over the paths and bytes of the sources in STAGE_SOURCES[stage]."""
    if stage not in STAGE_SOURCES:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGE_SOURCES)}")
    root = Path(ul_pipeline.__file__).resolve().parent
    h = hashlib.sha256()
    for entry in STAGE_SOURCES[stage]:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return short_hash(h.hexdigest())


def science_config(config: dict) -> dict:
    """The resolved config without the keys that may change between a run and its resumption."""
    return {k: science_config(v) if isinstance(v, dict) else v
            for k, v in config.items() if k not in RESUMABLE_KEYS}


def run_identity(config: dict, code_version: str, inputs: dict[str, Any] | None = None) -> str:
    """Short hash of what a training run computes: its science config, code version and input hashes."""
    return short_hash(json_sha256({"config": science_config(config), "code_version": code_version,
                                   "inputs": inputs or {}}))


@dataclass(frozen=True)
class RunChoice:
    """Where a run goes and why: status is new | resume | reuse | afresh."""

    run_dir: Path
    status: str
    reasons: list[str] = field(default_factory=list)

    def describe(self) -> str:
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return {"new": f"new run in {self.run_dir}",
                "resume": f"resuming the unfinished run in {self.run_dir}",
                "reuse": f"complete run in {self.run_dir} has this config and code; reused",
                "afresh": f"training afresh in {self.run_dir} (the complete run beside it differs{why})",
                }[self.status]


def mismatches(ckpt: dict, config: dict, code_version: str, inputs: dict[str, Any]) -> list[str]:
    """How a checkpoint differs from a run of (config, code version, inputs); [] when it is that run."""
    out = [d for d in config_differences(ckpt.get("config", {}), config)
           if d.split(":")[0].rsplit(".", 1)[-1] not in RESUMABLE_KEYS]
    if ckpt.get("stage_code_version") != code_version:
        out.append(f"stage code version: checkpoint has {ckpt.get('stage_code_version')!r}, code is {code_version!r}")
    out += [f"{k}: checkpoint has {ckpt.get(k)!r}, this run has {v!r}" for k, v in inputs.items() if ckpt.get(k) != v]
    return out


def choose_run_dir(run_dir: str | Path, kind: str, config: dict, code_version: str,
                   inputs: dict[str, Any] | None = None) -> RunChoice:
    """The folder a `kind` run of (config, code version, inputs) trains in; see the module docstring."""
    run_dir, inputs = Path(run_dir), dict(inputs or {})
    ckpt_path = run_dir / "last.pt"
    if not ckpt_path.exists():
        return RunChoice(run_dir, "new")
    ckpt = load_checkpoint(ckpt_path, kind=kind)
    if not ckpt.get("complete"):
        return RunChoice(run_dir, "resume")
    reasons = mismatches(ckpt, config, code_version, inputs)
    if not reasons:
        return RunChoice(run_dir, "reuse")
    sibling = run_dir.with_name(f"{run_dir.name}-{run_identity(config, code_version, inputs)}")
    if (sibling / "last.pt").exists():
        return RunChoice(sibling, "resume" if not load_checkpoint(sibling / "last.pt", kind=kind).get("complete")
                         else "reuse", reasons)
    return RunChoice(sibling, "afresh", reasons)
