"""Shared network pieces: log-SNR embedding, patching, n-d convs, ResBlock, adaLN transformer Block.

Spatial dimensionality is a parameter everywhere: `dims = 2` for images (C, H, W), `dims = 3` for
video (C, T, H, W). Patching and resampling act on the last two spatial axes only.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """An `nn.Conv{dims}d` built with the given arguments."""
    if dims not in (1, 2, 3):
        raise ValueError(f"conv_nd: dims must be 1, 2 or 3, got {dims}")
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](*args, **kwargs)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each (when the width allows)."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Set all parameters of `module` to zero and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def spatial_stride(dims: int, factor: int) -> tuple[int, ...]:
    """Stride/scale tuple acting by `factor` on the last two spatial axes only."""
    return (1,) * (dims - 2) + (factor, factor)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Space-to-depth by p x p over the last two axes: (B, C, *S, H, W) -> (B, C*p*p, *S, H/p, W/p)."""
    if p == 1:
        return x
    b, c, *rest, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"patchify: spatial size {h}x{w} is not divisible by patch {p}")
    r = len(rest)
    x = x.reshape(b, c, *rest, h // p, p, w // p, p)
    x = x.permute(0, 1, 3 + r, 5 + r, *range(2, 2 + r), 2 + r, 4 + r)  # (B, C, p, p, *S, H/p, W/p)
    return x.reshape(b, c * p * p, *rest, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Depth-to-space, the inverse of `patchify`: (B, C*p*p, *S, h, w) -> (B, C, *S, h*p, w*p)."""
    if p == 1:
        return x
    b, cpp, *rest, h, w = x.shape
    if cpp % (p * p):
        raise ValueError(f"unpatchify: {cpp} channels are not divisible by patch^2 = {p * p}")
    r = len(rest)
    x = x.reshape(b, cpp // (p * p), p, p, *rest, h, w)
    x = x.permute(0, 1, *range(4, 4 + r), 4 + r, 2, 5 + r, 3)  # (B, C, *S, h, p, w, p)
    return x.reshape(b, cpp // (p * p), *rest, h * p, w * p)


def time_patchify(x: torch.Tensor, pt: int) -> torch.Tensor:
    """Fold pt consecutive frames into channels: (B, C, T, H, W) -> (B, C*pt, T/pt, H, W)."""
    if pt == 1:
        return x
    if x.dim() != 5:
        raise ValueError(f"time_patchify: expected (B, C, T, H, W), got shape {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    if t % pt:
        raise ValueError(f"time_patchify: {t} frames are not divisible by the time patch {pt}")
    x = x.reshape(b, c, t // pt, pt, h, w).permute(0, 1, 3, 2, 4, 5)  # (B, C, pt, T/pt, H, W)
    return x.reshape(b, c * pt, t // pt, h, w)


def time_unpatchify(x: torch.Tensor, pt: int) -> torch.Tensor:
    """Inverse of `time_patchify`: (B, C*pt, t, H, W) -> (B, C, t*pt, H, W)."""
    if pt == 1:
        return x
    b, cpt, t, h, w = x.shape
    x = x.reshape(b, cpt // pt, pt, t, h, w).permute(0, 1, 3, 2, 4, 5)  # (B, C, t, pt, H, W)
    return x.reshape(b, cpt // pt, t * pt, h, w)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Flatten all spatial positions into tokens: (B, C, *S) -> (B, N, C)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `to_tokens`: (B, N, C) -> (B, C, *S)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *spatial)


class LogSNREmbedding(nn.Module):
    """Sinusoidal features of the log-SNR lambda [B] followed by an MLP to `dim`."""

    def __init__(self, dim: int, num_freqs: int = 128, min_period: float = 0.25,
                 max_period: float = 64.0):
        super().__init__()
        # periods in lambda units: geometric from 0.25 to 64, so lambda in [-20, 20] never wraps
        periods = torch.exp(torch.linspace(math.log(min_period), math.log(max_period), num_freqs))
        self.register_buffer("freqs", 2 * math.pi / periods, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, logsnr: torch.Tensor) -> torch.Tensor:
        phase = logsnr.float().reshape(-1, 1) * self.freqs  # (B, F); a scalar gives B = 1, broadcast
        return self.mlp(torch.cat([phase.sin(), phase.cos()], dim=1))  # (B, dim)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with optional scale/shift conditioning on an embedding."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, emb_dim: Optional[int] = None,
                 dropout: float = 0.0):
        super().__init__()
        self.dims = dims
        self.norm1 = group_norm(in_ch)
        self.conv1 = conv_nd(dims, in_ch, out_ch, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch)) if emb_dim else None
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(conv_nd(dims, out_ch, out_ch, 3, padding=1))
        self.skip = conv_nd(dims, in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None:
            if emb is None:
                raise ValueError("ResBlock was built with emb_dim but called without an embedding")
            scale, shift = self.emb(emb).view(emb.shape[0], -1, *(1,) * self.dims).chunk(2, dim=1)
            h = h * (1 + scale) + shift  # (B, out_ch, *S)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided 3x3 conv halving the last two spatial axes."""

    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, stride=spatial_stride(dims, 2), padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 over the last two spatial axes, then a 3x3 conv."""

    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.scale = spatial_stride(dims, 2)
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) scaled and shifted per example by (B, D) vectors."""
    return x * (1 + scale[:, None]) + shift[:, None]


def attention_fast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """SDPA for the opt-in fast path: when training in bf16 on CPU, the fp32 kernel (same math, 4-6x faster).

    The backward of PyTorch's CPU flash-attention kernel in bf16 is far slower than in fp32 at the few
    tokens and 32-wide heads of these ViTs (benchmarks/profile_nets.py: 45% of a bf16 base-model training
    step); its forward is not, so without gradients (sampling) this is the reference call. Inputs and
    output keep their dtype; only the kernel in between runs in fp32.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16 or not (torch.is_grad_enabled() and q.requires_grad):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    with torch.autocast("cpu", enabled=False):
        h = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p)
    return h.to(q.dtype)  # (B, heads, N, head_dim)


class Attention(nn.Module):
    """Multi-head self-attention over tokens via `scaled_dot_product_attention`."""

    fast = False  # the opt-in fast path (compute.fast_transformer; ul_pipeline.nets.fast), never a parameter

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"Attention: width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        dropout_p = self.dropout if self.training else 0.0
        h = (attention_fast if self.fast else F.scaled_dot_product_attention)(q, k, v, dropout_p=dropout_p)
        return self.proj(h.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block with DiT-style adaLN-Zero modulation from an embedding."""

    def __init__(self, width: int, heads: int, emb_dim: int, dropout: float = 0.0,
                 mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
            nn.Linear(mlp_ratio * width, width), nn.Dropout(dropout))
        # adaLN-Zero: shift/scale/gate for attention and MLP, all zero at init (block = identity)
        self.ada = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(emb_dim, 6 * width)))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(emb).chunk(6, dim=1)  # each (B, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a zero-initialised linear map from tokens to outputs."""

    def __init__(self, width: int, emb_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(emb_dim, 2 * width)))
        self.linear = zero_init(nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(emb).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))
