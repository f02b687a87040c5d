"""Stage 2 without a condition (data.num_classes 0): the base model learns p(z) of the whole set.

The network is the class-conditional one with a single label, the null label 0 (its embedding a
learned constant), so the variant is only what it leaves out: no label is read or dropped (no
random draw for dropping), and sampling has nothing to guide by, so a guidance weight other than 0
is refused rather than silently ignored.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ul_pipeline.stage2.model import BaseModel


class UnconditionalBaseModel(BaseModel):
    """BaseModel of p(z): every label is the null label 0."""

    def __init__(self, net, latent_shape: tuple[int, ...], num_classes: int = 0, **kwargs):
        if num_classes != 0:
            raise ValueError(f"an unconditional base model has no classes, got num_classes={num_classes}")
        super().__init__(net, latent_shape, 0, **kwargs)

    def drop_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Nothing to drop: every label is already the null label (and no uniform is drawn)."""
        return torch.zeros_like(labels)

    def loss_terms(self, z_clean: Tensor, labels: Tensor, *args, **kwargs):
        """BaseModel's loss with every label the null label, whatever the batch carried."""
        return super().loss_terms(z_clean, torch.zeros_like(labels), *args, **kwargs)

    @torch.no_grad()
    def sample_z0(self, labels: Tensor, steps: int, guidance: float = 0.0,
                  generator: torch.Generator | None = None,
                  progress: Callable[[int, int], None] | None = None, eta: float = 1.0,
                  guidance_interval: tuple[float, float] | None = None) -> Tensor:
        """len(labels) unconditional z0 (the labels' values are not read); guidance must be 0."""
        if guidance != 0.0:
            raise ValueError(f"guidance {guidance}: an unconditional base model (data.num_classes 0) has no "
                             "condition to guide by; use guidance 0")
        return super().sample_z0(torch.zeros_like(labels), steps, 0.0, generator=generator, progress=progress,
                                 eta=eta)
