"""Per-example diffusion loss terms in nats (docs/concepts/method.md). Reductions: sums over dims only."""

from __future__ import annotations

import torch
from torch import Tensor


def sum_over_dims(x: Tensor) -> Tensor:
    """Sum every dimension but the batch: (B, ...) -> (B,). Never a per-tensor mean (sec. 2.6)."""
    return x.flatten(1).sum(dim=1)


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against x."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def diffusion_term_nats(eps: Tensor, eps_hat: Tensor, neg_dlogsnr_dt: Tensor, weight: Tensor) -> Tensor:
    """1/2 w(lambda) (-dlambda/dt) ||eps - eps_hat||^2 per example; with w == 1 a Monte-Carlo ELBO term."""
    mse = sum_over_dims((eps - eps_hat).float() ** 2)  # (B,)
    return 0.5 * weight * neg_dlogsnr_dt * mse


def terminal_kl_nats(z_clean: Tensor, logsnr_1: float | Tensor) -> Tensor:
    """KL(N(alpha_1 z, sigma_1^2 I) || N(0, I)) summed over dims: 1/2 (alpha^2 z^2 + sigma^2 - log sigma^2 - 1)."""
    logsnr_1 = torch.as_tensor(logsnr_1, dtype=torch.float32, device=z_clean.device)
    alpha_sq, sigma_sq = torch.sigmoid(logsnr_1), torch.sigmoid(-logsnr_1)
    kl = 0.5 * (alpha_sq * z_clean.float() ** 2 + sigma_sq - torch.log(sigma_sq) - 1.0)
    return sum_over_dims(kl)
