"""Stage-1 latent prior: a ViT with one token per latent position, conditioned on lambda."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import Block, FinalLayer, LogSNREmbedding, from_tokens, to_tokens


class PriorViT(nn.Module):
    """ViT predicting v for the noisy latent z_t at log-SNR lambda (paper: 8 blocks, width 1024)."""

    def __init__(self, latent_shape: Sequence[int], width: int, depth: int, heads: int,
                 dropout: float = 0.0):
        super().__init__()
        self.latent_shape = tuple(latent_shape)
        c, *spatial = latent_shape
        self.spatial = tuple(spatial)
        self.embed = nn.Linear(c, width)
        self.pos = nn.Parameter(torch.randn(1, math.prod(spatial), width) * 0.02)
        self.logsnr_embed = LogSNREmbedding(width)
        self.blocks = nn.ModuleList(Block(width, heads, width, dropout) for _ in range(depth))
        self.out = FinalLayer(width, width, c)

    def forward(self, z_t: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        emb = self.logsnr_embed(logsnr)  # (B, width)
        h = self.embed(to_tokens(z_t)) + self.pos  # (B, N, width)
        for block in self.blocks:
            h = block(h, emb)
        return from_tokens(self.out(h, emb), self.spatial)  # (B, *latent_shape)
