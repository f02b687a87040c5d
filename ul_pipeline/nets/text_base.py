"""The text-conditioned base model: BaseViT reading a caption, PixArt-alpha style (issue 21).

The caption's pooled vector (B, 384) enters through an MLP into the adaLN embedding, where a class
label goes (`pooled`). With `cross=True` every transformer block is also followed by a cross-attention
from the image tokens to the caption's token states (B, T, 384), padding masked out of the keys, its
output projection zero-initialised: a fresh model with cross-attention computes exactly what the
pooled-only model with the same other weights computes. A caption dropped for classifier-free
guidance becomes the learned null caption: a null pooled vector and one null token (the rest of its
row masked). Text models use no class label: the net is built with no classes, so its label
embedding is one learned vector, the null label's.

A subclass, not options on BaseViT: nets/base.py, layers.py and presets.py are in the import closure
of Stage 1 and encoding, whose code versions key committed results; text conditioning stays outside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import BaseViT
from .layers import from_tokens, patchify, to_tokens, unpatchify, zero_init


@dataclass
class TextCondition:
    """A batch of captions as a text model reads them; rows index like a tensor (`text[rows]`)."""

    pooled: Tensor  # (B, D) float32, unit-norm sentence vectors
    token_states: Optional[Tensor] = None  # (B, T, D) float32; None for a pooled-only model
    mask: Optional[Tensor] = None  # (B, T) bool, True on real tokens; padding never changes the output
    drop: Optional[Tensor] = None  # (B,) bool, True: the learned null caption instead; None: none dropped

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def __getitem__(self, rows) -> "TextCondition":
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return TextCondition(self.pooled[rows], pick(self.token_states), pick(self.mask), pick(self.drop))

    def to(self, device) -> "TextCondition":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TextCondition(self.pooled.to(device), move(self.token_states), move(self.mask), move(self.drop))

    def dropped(self, drop: Tensor) -> "TextCondition":
        """The same captions with rows where `drop` (B,) is True replaced by the null caption."""
        return replace(self, drop=drop if self.drop is None else self.drop | drop)

    def rows_or_null(self, index: Tensor) -> "TextCondition":
        """Rows `index` (B',) of this batch; index len(self) means the null caption (classifier-free guidance)."""
        null = index >= len(self)
        picked = self[index.clamp(max=len(self) - 1)]
        return picked.dropped(null)


class TextEmbedding(nn.Module):
    """Caption -> (adaLN vector (B, emb_dim), token context (B, T, emb_dim) or None, key mask (B, T) or None)."""

    def __init__(self, text_dim: int, emb_dim: int, cross: bool):
        super().__init__()
        self.pooled = nn.Sequential(nn.Linear(text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.null_pooled = nn.Parameter(torch.randn(text_dim) / math.sqrt(text_dim))  # about unit norm, as pooled
        self.tokens = self.null_token = None
        if cross:
            self.tokens = nn.Sequential(nn.Linear(text_dim, emb_dim), nn.GELU(approximate="tanh"),
                                        nn.Linear(emb_dim, emb_dim))  # PixArt-alpha's caption projection
            self.null_token = nn.Parameter(torch.randn(text_dim) / math.sqrt(text_dim))

    def forward(self, text: TextCondition) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        b = len(text)
        drop = text.drop if text.drop is not None else torch.zeros(b, dtype=torch.bool, device=text.pooled.device)
        pooled = torch.where(drop[:, None], self.null_pooled.to(text.pooled.dtype), text.pooled)  # (B, D)
        if self.tokens is None:
            return self.pooled(pooled), None, None
        if text.token_states is None or text.mask is None:
            raise ValueError("a cross-attention text model needs the captions' token states and mask")
        states, mask = text.token_states, text.mask.bool()
        first = torch.arange(states.shape[1], device=states.device) == 0  # (T,): the null caption's one token
        null_states = torch.where(first[:, None], self.null_token.to(states.dtype), 0.0)  # (T, D)
        states = torch.where(drop[:, None, None], null_states, states)  # (B, T, D)
        mask = torch.where(drop[:, None], first[None, :], mask)  # (B, T)
        return self.pooled(pooled), self.tokens(states), mask


class CrossAttention(nn.Module):
    """Image tokens attend to caption tokens (masked keys); zero-initialised output, so it starts as a no-op."""

    def __init__(self, width: int, context_dim: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"CrossAttention: width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim, 2 * width)
        self.proj = zero_init(nn.Linear(width, width))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """The residual update (B, N, width) for tokens x (B, N, width), context (B, T, C), mask (B, T)."""
        b, n, d = x.shape
        t, hd = context.shape[1], d // self.heads
        q = self.q(self.norm(x)).view(b, n, self.heads, hd).transpose(1, 2)  # (B, heads, N, hd)
        k, v = self.kv(context).view(b, t, 2, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, T, hd)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # padding keys weigh 0
        return self.proj(h.transpose(1, 2).reshape(b, n, d))


class TextBaseViT(BaseViT):
    """BaseViT predicting v for z_t conditioned on lambda and a caption (`TextCondition`)."""

    def __init__(self, latent_shape: Sequence[int], widths: Sequence[int], blocks: Sequence[int],
                 heads: int | Sequence[int], text_dim: int = 384, cross: bool = True, dropout: float = 0.0):
        super().__init__(latent_shape, widths, blocks, heads, num_classes=0, dropout=dropout)
        heads0, heads1 = (heads, heads) if isinstance(heads, int) else heads
        (w0, w1), emb_dim = widths, widths[1]
        self.text_dim, self.cross = text_dim, cross
        self.text = TextEmbedding(text_dim, emb_dim, cross)

        def crosses(level_blocks, width, h):
            return nn.ModuleList(CrossAttention(width, emb_dim, h) for _ in level_blocks) if cross else None
        self.cross0_in = crosses(self.blocks0_in, w0, heads0)
        self.cross1 = crosses(self.blocks1, w1, heads1)
        self.cross0_out = crosses(self.blocks0_out, w0, heads0)

    @staticmethod
    def _level(blocks, crosses, h: Tensor, emb: Tensor, context: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
        for i, block in enumerate(blocks):
            h = block(h, emb)
            if crosses is not None:
                h = h + crosses[i](h, context, mask)
        return h

    def forward(self, z_t: Tensor, logsnr: Tensor, text: TextCondition) -> Tensor:  # type: ignore[override]
        """BaseViT's forward (nets/base.py) with the caption in the embedding and after every block."""
        pooled_emb, context, mask = self.text(text)
        emb = self.logsnr_embed(logsnr) + self.label_embed.weight[self.null_label] + pooled_emb  # (B, emb_dim)
        h = self.embed(to_tokens(z_t)) + self.pos0  # (B, N0, w0)
        h = self._level(self.blocks0_in, self.cross0_in, h, emb, context, mask)
        skip = h
        g = patchify(from_tokens(h, self.spatial0), 2)  # (B, 4*w0, *S/2)
        g = self.merge(to_tokens(g)) + self.pos1  # (B, N1, w1)
        g = self._level(self.blocks1, self.cross1, g, emb, context, mask)
        g = unpatchify(from_tokens(self.split(g), self.spatial1), 2)  # (B, w0, *S)
        h = self.skip(torch.cat([to_tokens(g), skip], dim=-1))  # (B, N0, w0)
        h = self._level(self.blocks0_out, self.cross0_out, h, emb, context, mask)
        return from_tokens(self.out(h, emb), self.spatial0)  # (B, *latent_shape)
