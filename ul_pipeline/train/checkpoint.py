"""Self-describing checkpoints: weights, EMA, optimiser, progress, resolved config, code version."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

import ul_pipeline

CHECKPOINT_FORMAT = 1
# keys that may change between a run and its resumption (length and cadence, not science)
RESUMABLE_KEYS = {"total_samples", "checkpoint_every_samples", "log_every_samples",  # length, cadence
                  "device", "precision", "workers",  # where it runs (compute.*), world size included
                  "nproc_per_node", "nnodes", "rdzv_backend", "rdzv_endpoint", "rdzv_id", "dist_timeout_s",
                  "max_restarts", "compile", "tf32"}
# the config sections each kind of run consumes: only these decide resume and reuse (eval.*, sample.*,
# compute.* and the other stages' sections never retrain or refuse a run). Stage 2 reads the store
# (whose encoder is an input of its own), the data section and the encoder's lambda(0).
STAGE_CONFIG = {"stage1": ("data", "stage1"), "stage2": ("data", "stage1.logsnr_0", "stage2")}
# the hashes of what a run was trained on: a run never resumes on other inputs
INPUT_KEYS = ("dataset_manifest_sha256", "encoder_sha256")


def stage_config(config: dict, kind: str | None) -> dict:
    """The part of a resolved config that a `kind` run consumes (all of it for another kind)."""
    if kind not in STAGE_CONFIG:
        return config
    out: dict = {}
    for key in STAGE_CONFIG[kind]:
        head, _, leaf = key.partition(".")
        if head in config:
            if leaf:
                out.setdefault(head, {})[leaf] = (config[head] or {}).get(leaf)
            else:
                out[head] = config[head]
    return out


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, of the wrong kind, or does not match the config."""


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    try:
        root = Path(ul_pipeline.__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{ul_pipeline.__version__}+{sha}{'.dirty' if dirty else ''}" if sha else ul_pipeline.__version__


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (the identity of a checkpoint in latent stores)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically (tmp file, then rename): a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "code_version": code_version(), **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: str = "cpu") -> dict:
    """Load and check format and kind ('stage1' | 'stage2'); errors name the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several types for truncated/corrupt zip files
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a ul_pipeline checkpoint of format {CHECKPOINT_FORMAT}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path} holds a '{ckpt.get('kind')}' checkpoint, expected '{kind}'")
    return ckpt


def config_differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved config dicts."""
    keys = sorted(set(stored) | set(current))
    out = []
    for k in keys:
        a, b, name = stored.get(k), current.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: checkpoint has {a!r}, config has {b!r}")
    return out


def input_differences(ckpt: dict, inputs: dict) -> list[str]:
    """How the inputs a checkpoint was trained on differ from `inputs` (only INPUT_KEYS count)."""
    return [f"{k}: checkpoint has {ckpt.get(k)!r}, this run has {v!r}" for k, v in inputs.items()
            if k in INPUT_KEYS and v is not None and ckpt.get(k) != v]


def check_resumable(ckpt: dict, config: dict, path: str | os.PathLike, kind: str | None = None,
                    inputs: dict | None = None) -> None:
    """Refuse to resume a checkpoint of another config (in the sections `kind` consumes; length and
    cadence may change) or trained on other inputs (shards, encoder)."""
    other = input_differences(ckpt, inputs or {})
    if other:
        raise CheckpointError(f"cannot resume {path}: it was trained on other inputs:\n  " + "\n  ".join(other)
                              + "\nIts run folder belongs to those inputs; use another run directory.")
    diffs = [d for d in config_differences(stage_config(ckpt.get("config", {}), kind), stage_config(config, kind))
             if d.split(":")[0].rsplit(".", 1)[-1] not in RESUMABLE_KEYS]
    if diffs:
        raise CheckpointError(f"cannot resume {path}: its config differs from this run's:\n  " + "\n  ".join(diffs)
                              + "\nUse another run directory, or restore the config.")
