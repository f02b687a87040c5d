"""Variance-preserving log-SNR conventions and schedules lambda(t), t in [0, 1] (docs/concepts/method.md).

lambda = log(alpha^2 / sigma^2), alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda);
lambda(t) decreases with t: lambda(0) = logsnr_max (most precise), lambda(1) = logsnr_min.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def alpha_sigma(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) of a variance-preserving process at log-SNR `logsnr`."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def cosine_logsnr(t: Tensor, logsnr_min: float, logsnr_max: float, shift: float = 0.0) -> Tensor:
    """Truncated cosine schedule -2 log tan(u) + shift, with end points exactly [logsnr_max, logsnr_min]."""
    t_min = math.atan(math.exp(-0.5 * (logsnr_max - shift)))
    t_max = math.atan(math.exp(-0.5 * (logsnr_min - shift)))
    u = t_min + t * (t_max - t_min)
    return -2.0 * torch.log(torch.tan(u)) + shift


def cosine_neg_dlogsnr_dt(t: Tensor, logsnr_min: float, logsnr_max: float, shift: float = 0.0) -> Tensor:
    """-dlambda/dt of `cosine_logsnr` (positive): 4 (t_max - t_min) / sin(2u); the shift is a constant."""
    t_min = math.atan(math.exp(-0.5 * (logsnr_max - shift)))
    t_max = math.atan(math.exp(-0.5 * (logsnr_min - shift)))
    u = t_min + t * (t_max - t_min)
    return 4.0 * (t_max - t_min) / torch.sin(2.0 * u)


def resolution_shift(resolution: int, reference: int = 64) -> float:
    """Shifted-cosine offset 2 log(reference / d) for pixels at resolution d (simple diffusion)."""
    return 2.0 * math.log(reference / resolution)


@dataclass(frozen=True)
class Schedule:
    """A truncated (optionally shifted) cosine schedule; the ELBO depends only on its end points."""

    logsnr_min: float
    logsnr_max: float
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"schedule needs logsnr_min < logsnr_max, got {self.logsnr_min}, {self.logsnr_max}")

    def logsnr(self, t: Tensor) -> Tensor:
        """lambda(t)."""
        return cosine_logsnr(t, self.logsnr_min, self.logsnr_max, self.shift)

    def neg_dlogsnr_dt(self, t: Tensor) -> Tensor:
        """-dlambda/dt(t) > 0."""
        return cosine_neg_dlogsnr_dt(t, self.logsnr_min, self.logsnr_max, self.shift)
