"""Stage-1 decoder: a pixel-space U-ViT conditioned on the noisy latent z0 (paper sec. 4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (Block, Downsample, LogSNREmbedding, ResBlock, Upsample, conv_nd, from_tokens,
                     group_norm, patchify, time_patchify, time_unpatchify, to_tokens,
                     unpatchify, zero_init)


def num_downsamples(image_shape: Sequence[int], latent_shape: Sequence[int], patch: int) -> int:
    """log2(patched image resolution / latent resolution); ValueError unless a whole number >= 0."""
    (_, *img), (_, *lat) = image_shape, latent_shape
    if len(img) != len(lat) or img[:-2] != lat[:-2]:
        raise ValueError(f"DecoderUViT: image {tuple(image_shape)} and latent {tuple(latent_shape)} "
                         "must have the same spatial rank and the same leading (e.g. time) axes")
    if img[-2] % patch or img[-1] % patch:
        raise ValueError(f"DecoderUViT: image {tuple(image_shape)} is not divisible by patch {patch}")
    ratios = {(img[-2] // patch) / lat[-2], (img[-1] // patch) / lat[-1]}
    ratio = ratios.pop()
    n_down = round(math.log2(ratio)) if ratio >= 1 else -1
    if ratios or n_down < 0 or 2 ** n_down != ratio:
        raise ValueError(f"DecoderUViT: patched image {tuple(image_shape)} / patch {patch} is not a "
                         f"power-of-two multiple of latent {tuple(latent_shape)} on both axes")
    return n_down


class DecoderUViT(nn.Module):
    """Pixel U-ViT predicting v for x_t, with z0 added to the tokens at the latent resolution."""

    def __init__(self, image_shape: Sequence[int], latent_shape: Sequence[int],
                 channels: Sequence[int], blocks: Sequence[int], width: int, depth: int, heads: int,
                 dropout: float = 0.0, patch: int = 2, time_patch: int = 1):
        super().__init__()
        if len(channels) != len(blocks) or not channels:
            raise ValueError(f"DecoderUViT: channels {list(channels)} and blocks {list(blocks)} must "
                             "be non-empty lists of the same length")
        self.image_shape, self.latent_shape = tuple(image_shape), tuple(latent_shape)
        self.patch = patch
        self.dims = dims = len(image_shape) - 1
        self.time_patch = time_patch  # video: frames folded into channels, as in the encoder
        if time_patch > 1 and (dims != 3 or image_shape[1] % time_patch):
            raise ValueError(f"DecoderUViT: time_patch {time_patch} needs video (C, T, H, W) with "
                             f"T divisible by it; got {tuple(image_shape)}")
        patched = ((image_shape[0] * time_patch, image_shape[1] // time_patch, *image_shape[2:])
                   if time_patch > 1 else tuple(image_shape))  # (C*pt, T/pt, H, W)
        self.n_down = n_down = num_downsamples(patched, latent_shape, patch)
        if n_down > len(channels):
            raise ValueError(f"DecoderUViT: reaching latent {tuple(latent_shape)} from image "
                             f"{tuple(image_shape)} needs {n_down} downsamplings but only "
                             f"{len(channels)} conv stages {list(channels)} are configured")
        self.latent_spatial = tuple(latent_shape[1:])
        emb_dim = width
        self.logsnr_embed = LogSNREmbedding(emb_dim)

        self.conv_in = conv_nd(dims, patched[0] * patch * patch, channels[0], 3, padding=1)
        self.down = nn.ModuleList()  # ResBlocks and Downsamples in order
        ch = channels[0]
        skip_chs = []
        for i, (out_ch, n) in enumerate(zip(channels, blocks)):
            for _ in range(n):
                self.down.append(ResBlock(dims, ch, out_ch, emb_dim, dropout))
                ch = out_ch
                skip_chs.append(ch)
            if i < n_down:
                self.down.append(Downsample(dims, ch))

        # middle: tokens at the latent resolution, z0 injected by a linear projection
        self.mid_in = nn.Linear(ch, width)
        self.z0_in = nn.Linear(latent_shape[0], width)
        self.pos = nn.Parameter(torch.randn(1, math.prod(self.latent_spatial), width) * 0.02)
        self.mid = nn.ModuleList(Block(width, heads, emb_dim, dropout) for _ in range(depth))
        self.mid_norm = nn.LayerNorm(width, eps=1e-6)
        self.mid_out = nn.Linear(width, ch)

        self.up = nn.ModuleList()  # Upsamples and skip-consuming ResBlocks, mirroring self.down
        for i in reversed(range(len(channels))):
            if i < n_down:
                self.up.append(Upsample(dims, ch))
            for _ in range(blocks[i]):
                self.up.append(ResBlock(dims, ch + skip_chs.pop(), channels[i], emb_dim, dropout))
                ch = channels[i]
        self.norm_out = group_norm(ch)
        self.conv_out = zero_init(conv_nd(dims, ch, patched[0] * patch * patch, 3, padding=1))

    def forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        emb = self.logsnr_embed(logsnr)  # (B, width)
        h = self.conv_in(patchify(time_patchify(x_t, self.time_patch), self.patch))  # (B, channels[0], *S/patch)
        skips = []
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            if isinstance(layer, ResBlock):
                skips.append(h)

        t = self.mid_in(to_tokens(h)) + self.z0_in(to_tokens(z0)) + self.pos  # (B, N_latent, width)
        for block in self.mid:
            t = block(t, emb)
        h = h + from_tokens(self.mid_out(self.mid_norm(t)), self.latent_spatial)  # (B, ch, *latent)

        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        out = unpatchify(self.conv_out(F.silu(self.norm_out(h))), self.patch)  # (B, C*pt, T/pt, H, W)
        return time_unpatchify(out, self.time_patch)  # (B, *image_shape)
