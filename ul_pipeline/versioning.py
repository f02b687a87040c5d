"""What identifies an artifact: stage code versions, config hashes, and which run folder a stage uses.

A stage's code version is a hash of the library modules that stage runs: the static import
closure (every `import`, also inside functions) of its entry modules (`STAGE_ROOTS`), not a
constant bumped by hand, not a hand-kept file list and not the git commit. A hand-bumped constant
or list is forgotten exactly when it matters (a "small" fix to a loss, a noise draw moved to
another module), and the commit changes with every README edit. The configuration package is
left out: what a config says is compared on its own (the resolved config is part of every run's
identity), and a new key elsewhere must not retrain everything. It errs on the side of
retraining: a comment edit in any module a stage imports counts as a new version of that stage.

`choose_run_dir` decides where a training run goes:
  - no checkpoint yet                                  -> the run folder (a new run);
  - an unfinished checkpoint of the same inputs        -> the run folder (resume, exactly as before);
  - a complete one of the same config, code and inputs -> the run folder (reuse; a longer
                                                          `total_samples` continues it);
  - a complete one that differs in any of them, or an
    unfinished one trained on other inputs             -> a sibling folder `<run>-<identity>`,
    keyed by the hash of (config, code version, inputs), so the old run stays untouched and
    re-running the new config resumes or reuses its own folder.
"Config" is only the sections the stage consumes (`train.checkpoint.STAGE_CONFIG`): an evaluation
or sampler setting, compute.*, or Stage 2's settings never retrain Stage 1.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import ul_pipeline
from ul_pipeline.train.checkpoint import (RESUMABLE_KEYS, config_differences, input_differences, load_checkpoint,
                                         stage_config)

# the entry modules of each stage; its code version hashes their import closure inside ul_pipeline
STAGE_ROOTS: dict[str, tuple[str, ...]] = {
    "shards": ("ul_pipeline.data.shards", "ul_pipeline.data.sources"),
    "stage1": ("ul_pipeline.stage1.training", "ul_pipeline.stage1.batches"),
    "encode": ("ul_pipeline.latents.extract", "ul_pipeline.latents.encode", "ul_pipeline.stage1.training"),
    "stage2": ("ul_pipeline.stage2.training", "ul_pipeline.stage2.batches"),  # batches: in memory or streamed
}
OUTSIDE_CODE_VERSIONS = ("ul_pipeline.config",)  # compared as resolved configs instead
SHORT = 12  # hex digits of a short hash (store paths, run folder suffixes)


def short_hash(sha256: str) -> str:
    """The first SHORT hex digits of a sha256 (enough to tell artifacts of one experiment apart)."""
    return sha256[:SHORT]


def json_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def library_modules() -> dict[str, Path]:
    """Every module of ul_pipeline by dotted name (a package by its __init__.py)."""
    root = Path(ul_pipeline.__file__).resolve().parent
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ul_pipeline modules that module `name` imports anywhere in its source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([base] if base else []))
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(c for c in candidates if c in modules and c != name)
    return found


def import_closure(roots: tuple[str, ...]) -> list[str]:
    """The modules `roots` import, directly or not (roots included, configuration excluded), sorted."""
    modules = library_modules()
    seen, todo = set(), [r for r in roots]
    while todo:
        m = todo.pop()
        if m in seen or m.startswith(OUTSIDE_CODE_VERSIONS):
            continue
        if m not in modules:
            raise KeyError(f"{m} is not a module of ul_pipeline")
        seen.add(m)
        parents = {m.rsplit(".", i)[0] for i in range(1, m.count(".") + 1)}  # importing a.b.c runs a/__init__, a/b/__init__
        todo += sorted((imported_modules(m, modules[m], modules) | (parents & set(modules))) - seen)
    return sorted(seen)


@lru_cache(maxsize=None)
def stage_code_version(stage: str) -> str:
    """Short sha256 over the names and bytes of the modules in the import closure of STAGE_ROOTS[stage]."""
    if stage not in STAGE_ROOTS:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGE_ROOTS)}")
    modules = library_modules()
    h = hashlib.sha256()
    for name in import_closure(STAGE_ROOTS[stage]):
        h.update(name.encode() + b"\0" + modules[name].read_bytes() + b"\0")
    return short_hash(h.hexdigest())


def science_config(config: dict) -> dict:
    """The resolved config without the keys that may change between a run and its resumption."""
    return {k: science_config(v) if isinstance(v, dict) else v
            for k, v in config.items() if k not in RESUMABLE_KEYS}


def run_identity(config: dict, code_version: str, inputs: dict[str, Any] | None = None,
                 kind: str | None = None) -> str:
    """Short hash of what a `kind` run computes: the config it consumes, its code version and input hashes."""
    return short_hash(json_sha256({"config": science_config(stage_config(config, kind)), "code_version": code_version,
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


def mismatches(ckpt: dict, config: dict, code_version: str, inputs: dict[str, Any],
               kind: str | None = None) -> list[str]:
    """How a checkpoint differs from a `kind` run of (config, code version, inputs); [] when it is that run.

    Only the config sections the stage consumes count (`train.checkpoint.STAGE_CONFIG`).
    """
    out = [d for d in config_differences(stage_config(ckpt.get("config", {}), kind), stage_config(config, kind))
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
        moved = input_differences(ckpt, inputs)  # its inputs are gone: it can never be resumed here
        if not moved:
            return RunChoice(run_dir, "resume")
        reasons = ["unfinished, and trained on other inputs: " + "; ".join(moved)]
    else:
        reasons = mismatches(ckpt, config, code_version, inputs, kind)
        if not reasons:
            return RunChoice(run_dir, "reuse")
    sibling = run_dir.with_name(f"{run_dir.name}-{run_identity(config, code_version, inputs, kind)}")
    if (sibling / "last.pt").exists():
        return RunChoice(sibling, "resume" if not load_checkpoint(sibling / "last.pt", kind=kind).get("complete")
                         else "reuse", reasons)
    return RunChoice(sibling, "afresh", reasons)
