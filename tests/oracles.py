"""Closed-form optimal denoisers (v-prediction) for Gaussian and Gaussian-mixture data."""

from __future__ import annotations

import torch
from torch import Tensor

from ul_pipeline.diffusion import alpha_sigma, v_from_x


def gaussian_posterior_mean(z_t: Tensor, logsnr: Tensor, mean: float, std: float) -> Tensor:
    """E[x | z_t] for x ~ N(mean, std^2) per dimension."""
    alpha, sigma = alpha_sigma(logsnr.reshape(-1, *([1] * (z_t.dim() - 1))))
    gain = alpha * std**2 / (alpha**2 * std**2 + sigma**2)
    return mean + gain * (z_t - alpha * mean)


def gaussian_oracle(mean: float, std: float):
    """v_hat(z_t, lambda) of the optimal denoiser for x ~ N(mean, std^2 I)."""

    def denoise(z_t: Tensor, logsnr: Tensor) -> Tensor:
        alpha, sigma = alpha_sigma(logsnr.reshape(-1, *([1] * (z_t.dim() - 1))))
        return v_from_x(z_t, gaussian_posterior_mean(z_t, logsnr, mean, std), alpha, sigma)

    return denoise


def mixture_oracle(means: list[float], std: float, weights: list[float]):
    """v_hat of the optimal denoiser for a 1-D Gaussian mixture, applied per dimension."""
    mus = torch.tensor(means)
    log_w = torch.tensor(weights).log()

    def denoise(z_t: Tensor, logsnr: Tensor) -> Tensor:
        alpha, sigma = alpha_sigma(logsnr.reshape(-1, *([1] * (z_t.dim() - 1))))
        var = alpha**2 * std**2 + sigma**2  # marginal variance of each component at z_t
        z = z_t.unsqueeze(-1)  # (..., 1) against (K,)
        a, v = alpha.unsqueeze(-1), var.unsqueeze(-1)
        logits = log_w - 0.5 * (z - a * mus) ** 2 / v
        resp = torch.softmax(logits, dim=-1)
        comp_mean = mus + a * std**2 / v * (z - a * mus)
        x_hat = (resp * comp_mean).sum(-1)
        return v_from_x(z_t, x_hat, alpha, sigma)

    return denoise
