"""Horizontal flips: Stage 1 trains on random mirrors; the latent store keeps both, Stage 2 picks per draw.

A flip applied once at encoding time would freeze one mirror of each image in the cache; storing
the latents of the image and of its mirror and choosing between them at every Stage-2 draw keeps
the augmentation as random as Stage 1 saw it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def hflip(x: Tensor) -> Tensor:
    """Mirror images (B, C, H, W) or clips (B, C, T, H, W) left-right (the last axis is the width)."""
    return x.flip(-1)


def flip_mask(batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
    """bool (B,): which examples of a batch take the mirror (each with probability 1/2)."""
    return torch.rand(batch, generator=generator, device=device) < 0.5


def per_example(mask: Tensor, like: Tensor) -> Tensor:
    """A (B,) mask shaped (B, 1, ..., 1) to broadcast over every axis of `like` but the batch axis."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each image (B, C, H, W) or clip (B, C, T, H, W) of x mirrored with probability 1/2 (Stage 1's augmentation)."""
    return torch.where(per_example(flip_mask(len(x), x.device, generator), x), hflip(x), x)


def pick_mirror(z_clean: Tensor, z_clean_hflip: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Per example, the latent of the image or of its mirror ((B, C, h, w) or (B, C, t, h, w)), each w.p. 1/2."""
    return torch.where(per_example(flip_mask(len(z_clean), z_clean.device, generator), z_clean), z_clean_hflip, z_clean)
