"""Stage-2 base model: a class-conditional two-level ViT on latents (paper: widths [512, 1024])."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import (Block, FinalLayer, LogSNREmbedding, from_tokens, patchify, to_tokens,
                     unpatchify)


class BaseViT(nn.Module):
    """Two-level ViT predicting v for z_t, conditioned on lambda and a class label via adaLN."""

    def __init__(self, latent_shape: Sequence[int], widths: Sequence[int], blocks: Sequence[int],
                 heads: int | Sequence[int], num_classes: int, dropout: float = 0.0,
                 context: bool = False):
        super().__init__()
        if len(widths) != 2 or len(blocks) != 2:
            raise ValueError(f"BaseViT: widths {list(widths)} and blocks {list(blocks)} must have "
                             "two entries (level 0, level 1)")
        heads0, heads1 = (heads, heads) if isinstance(heads, int) else heads
        c, *spatial = latent_shape
        if spatial[-2] % 2 or spatial[-1] % 2:
            raise ValueError(f"BaseViT: latent {tuple(latent_shape)} needs even last two axes "
                             "for the 2x2 token merge")
        self.latent_shape = tuple(latent_shape)
        self.num_classes = num_classes
        self.spatial0 = tuple(spatial)
        self.spatial1 = (*spatial[:-2], spatial[-2] // 2, spatial[-1] // 2)
        w0, w1 = widths
        emb_dim = w1

        self.logsnr_embed = LogSNREmbedding(emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim)  # index num_classes = null label
        nn.init.normal_(self.label_embed.weight, std=0.02)

        self.embed = nn.Linear(c, w0)
        self.pos0 = nn.Parameter(torch.randn(1, math.prod(self.spatial0), w0) * 0.02)
        # video frame prediction: a learned vector added to the tokens of given (context) latent frames
        self.context_embed = nn.Parameter(torch.zeros(w0)) if context else None
        n_before = blocks[0] // 2
        self.blocks0_in = nn.ModuleList(Block(w0, heads0, emb_dim, dropout) for _ in range(n_before))
        self.merge = nn.Linear(4 * w0, w1)
        self.pos1 = nn.Parameter(torch.randn(1, math.prod(self.spatial1), w1) * 0.02)
        self.blocks1 = nn.ModuleList(Block(w1, heads1, emb_dim, dropout) for _ in range(blocks[1]))
        self.split = nn.Linear(w1, 4 * w0)
        self.skip = nn.Linear(2 * w0, w0)
        self.blocks0_out = nn.ModuleList(
            Block(w0, heads0, emb_dim, dropout) for _ in range(blocks[0] - n_before))
        self.out = FinalLayer(w0, emb_dim, c)

    @property
    def null_label(self) -> int:
        """Label index meaning 'no class' (classifier-free guidance)."""
        return self.num_classes

    def forward(self, z_t: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`context_mask` (B, t) bool, video only: latent frames that hold given context, not noise."""
        emb = self.logsnr_embed(logsnr) + self.label_embed(labels)  # (B, emb_dim)
        h = self.embed(to_tokens(z_t)) + self.pos0  # (B, N0, w0)
        if context_mask is not None:
            if self.context_embed is None:
                raise ValueError("BaseViT was built without context=True but got a context_mask")
            per_frame = math.prod(self.spatial0[1:])  # tokens per latent frame (time-major order)
            mask = context_mask.to(h.dtype).repeat_interleave(per_frame, dim=1)  # (B, N0)
            h = h + mask[..., None] * self.context_embed
        for block in self.blocks0_in:
            h = block(h, emb)
        skip = h
        g = patchify(from_tokens(h, self.spatial0), 2)  # (B, 4*w0, *S/2)
        g = self.merge(to_tokens(g)) + self.pos1  # (B, N1, w1)
        for block in self.blocks1:
            g = block(g, emb)
        g = unpatchify(from_tokens(self.split(g), self.spatial1), 2)  # (B, w0, *S)
        h = self.skip(torch.cat([to_tokens(g), skip], dim=-1))  # (B, N0, w0)
        for block in self.blocks0_out:
            h = block(h, emb)
        return from_tokens(self.out(h, emb), self.spatial0)  # (B, *latent_shape)
