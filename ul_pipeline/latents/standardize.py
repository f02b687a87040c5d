"""Standardised latents for Stage 2: one shift per channel and one scale, undone exactly before decoding.

KL-regularised latents have no fixed scale (Stable Diffusion's are rescaled by 1/std: LDM's
`scale_by_std`), and a latent std of s shifts every noise level the base model sees by 2 log s in
log-SNR. Stage 2 may therefore train on u = (y - shift) / scale, where y is the latent whose
lambda(0) view the decoder reads (z_clean, or z_clean + s eps1 for a learned variance). To stay
exact, the base model's most precise level moves with the scale:

    lambda~_0 = lambda_0 + 2 log(scale)          (eq. A: the same noise-to-signal ratio in units of y)

so its output u0 = alpha~ u + sigma~ eps maps back to the decoder's z0 = alpha0 y + sigma0 eps by

    z0 = (alpha0 / alpha~) * scale * u0 + alpha0 * shift     (eq. B)

One scale for all channels keeps eq. A a single schedule; a per-channel shift is exact either way.
The store records both for every latent set (`latent_shift`, `latent_scale`, measured on all its
training latents); `stage2.standardize` decides whether a base model uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Standardization:
    """u = (y - shift) / scale with a per-channel shift (C,) and one scale."""

    shift: tuple[float, ...]
    scale: float

    @classmethod
    def from_stats(cls, channel_mean, channel_std, mean_extra_variance: float = 0.0) -> "Standardization":
        """From a store's per-channel mean/std (+ the mean learned variance E[s^2] of z_clean + s eps1)."""
        var = float(np.mean(np.square(np.asarray(channel_std, dtype=np.float64)))) + float(mean_extra_variance)
        if not math.isfinite(var) or var <= 0:
            raise ValueError(f"cannot standardise latents with variance {var}")
        return cls(tuple(float(m) for m in channel_mean), math.sqrt(var))

    @classmethod
    def from_dict(cls, d: dict | None) -> "Standardization | None":
        return None if d is None else cls(tuple(float(x) for x in d["shift"]), float(d["scale"]))

    def to_dict(self) -> dict:
        return {"shift": list(self.shift), "scale": self.scale}

    def _shift(self, like: Tensor) -> Tensor:
        view = (1, len(self.shift)) + (1,) * (like.ndim - 2)
        return torch.tensor(self.shift, dtype=like.dtype, device=like.device).view(view)

    def forward(self, y: Tensor) -> Tensor:
        """u = (y - shift) / scale, y (B, C, ...)."""
        return (y - self._shift(y)) / self.scale

    def logvar(self, z_logvar: Tensor) -> Tensor:
        """A learned log-variance in units of u."""
        return z_logvar - 2.0 * math.log(self.scale)

    def logsnr_0(self, logsnr_0: float) -> float:
        """eq. A: the base model's most precise level in units of u."""
        return logsnr_0 + 2.0 * math.log(self.scale)

    def z0(self, u0: Tensor, logsnr_0: float) -> Tensor:
        """eq. B: the decoder's z0 from the base model's u0 at level logsnr_0(logsnr_0)."""
        alpha0 = math.sqrt(1.0 / (1.0 + math.exp(-logsnr_0)))
        alpha_u = math.sqrt(1.0 / (1.0 + math.exp(-self.logsnr_0(logsnr_0))))
        return (alpha0 / alpha_u) * self.scale * u0 + alpha0 * self._shift(u0)
