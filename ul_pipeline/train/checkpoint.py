"""Self-describing checkpoints: weights, EMA, optimiser, progress, resolved config, code version."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ul_pipeline.config.identity import without_added_defaults
from ul_pipeline.data.storage import write_file_atomic
from ul_pipeline.provenance import code_version

CHECKPOINT_FORMAT = 1
# keys that may change between a run and its resumption (length and cadence, not science)
RESUMABLE_KEYS = {"total_samples", "checkpoint_every_samples", "log_every_samples",  # length, cadence
                  "device", "precision", "workers",  # where it runs (compute.*), world size included
                  "nproc_per_node", "nnodes", "rdzv_backend", "rdzv_endpoint", "rdzv_id", "dist_timeout_s",
                  "max_restarts", "compile", "tf32", "fast_transformer"}
# the config sections each kind of run consumes: only these decide resume and reuse (eval.*, sample.*,
# compute.* and the other stages' sections never retrain or refuse a run). Stage 2 reads the store
# (whose encoder is an input of its own), the data section and the encoder's lambda(0).
STAGE_CONFIG = {"stage1": ("data", "stage1"), "stage2": ("data", "stage1.logsnr_0", "stage2")}
# the hashes of what a run was trained on: a run never resumes on other inputs (text_encoder_sha256: a text
# model's caption features; absent from other checkpoints, so not compared for them)
INPUT_KEYS = ("dataset_manifest_sha256", "encoder_sha256", "text_encoder_sha256")


def stage_config(config: dict, kind: str | None) -> dict:
    """The part of a resolved config that a `kind` run consumes (all of it for another kind), keys added later
    left out at their default (ADDED_KEYS_AT_DEFAULT: a run from before a new switch is the same run)."""
    config = without_added_defaults(config)
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


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (the identity of a checkpoint in latent stores)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically and durably (a unique fsynced temporary file, then a rename): a crash or a
    concurrent writer never leaves a half-written checkpoint under `path`.

    Non-finite weights (`model` or `ema`) are never written: FloatingPointError, and the previous
    checkpoint stays. (A non-finite gradient with a finite loss turns the weights into NaN.)
    """
    path = Path(path)
    bad = [f"{part}.{name}" for part in ("model", "ema") for name in non_finite_tensors(payload.get(part) or {})]
    if bad:
        raise FloatingPointError(f"refusing to save {path}: non-finite weights at step {payload.get('step')} "
                                 f"(samples_seen={payload.get('samples_seen')}) in {', '.join(bad[:5])}"
                                 f"{' ...' if len(bad) > 5 else ''}; the last good checkpoint of run folder "
                                 f"{path.parent} is kept")
    ckpt = plain_types({"format": CHECKPOINT_FORMAT, "code_version": code_version(), **payload}, str(path))
    return write_file_atomic(path, lambda f: torch.save(ckpt, f))


def plain_types(value: Any, where: str) -> Any:
    """`value` with numpy scalars and paths made plain, so `torch.load(weights_only=True)` can read it back."""
    if isinstance(value, dict):
        return {k: plain_types(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_types(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass that pickles as numpy
        return value.item()
    if value is None or isinstance(value, (torch.Tensor, torch.Size, str, bool, int, float, torch.dtype)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise CheckpointError(f"{where} is a {type(value).__name__}: a checkpoint holds only tensors and plain "
                          "Python values (it is loaded with weights_only=True)")


def non_finite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold a NaN or an infinity."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def read_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: str = "cpu"
                    ) -> tuple[dict, str]:
    """(checkpoint, sha256 of its bytes) from ONE read of the file, so the hash is that of the weights loaded.

    Loaded with `weights_only=True`: tensors and plain Python values only, so a crafted file cannot
    run code. Checks format and kind ('stage1' | 'stage2'); errors name the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses any other object; keep torch's reason line
        why = next((line.strip().split(" Please use")[0] for line in str(e).splitlines() if "Unsupported" in line), "")
        raise CheckpointError(f"refusing checkpoint {path}: it holds objects other than tensors and plain "
                              f"Python values, as only a crafted or foreign file does. {why}") from None
    except Exception as e:  # torch raises several types for truncated/corrupt zip files
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a ul_pipeline checkpoint of format {CHECKPOINT_FORMAT}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path} holds a '{ckpt.get('kind')}' checkpoint, expected '{kind}'")
    return ckpt, hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: str = "cpu") -> dict:
    """`read_checkpoint` without the hash."""
    return read_checkpoint(path, kind, map_location)[0]


def unfinished_note(path: str | os.PathLike, ckpt: dict) -> str | None:
    """A warning when a checkpoint's run has not reached its total_samples (complete is False), else None."""
    if ckpt.get("complete", True):
        return None
    stage = ckpt.get("kind", "")
    total = ckpt.get("config", {}).get(stage, {}).get("train", {}).get("total_samples", "?")
    return (f"checkpoint {path} is unfinished (samples_seen {ckpt.get('samples_seen')} of {total}): "
            "its numbers describe a model still in training")


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
    return [f"{k}: checkpoint has {ckpt.get(k)!r}, this run " + (f"has {inputs.get(k)!r}" if inputs.get(k) else
                                                                 "names none (pass it, e.g. extra={...})")
            for k in INPUT_KEYS if ckpt.get(k) is not None and inputs.get(k) != ckpt.get(k)]


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
