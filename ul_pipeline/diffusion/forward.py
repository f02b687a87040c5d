"""The forward (noising) process for training: draw t, lambda(t), eps and x_t = alpha x + sigma eps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ul_pipeline.diffusion.losses import expand_like
from ul_pipeline.diffusion.parametrization import eps_from_v
from ul_pipeline.diffusion.schedules import Schedule, alpha_sigma
from ul_pipeline.diffusion.time_sampling import sample_time


@dataclass
class Noised:
    """One noised batch: t, logsnr and -dlambda/dt are (B,); alpha, sigma broadcast against x."""

    t: Tensor
    logsnr: Tensor
    neg_dlogsnr_dt: Tensor
    alpha: Tensor
    sigma: Tensor
    eps: Tensor
    x_t: Tensor

    def eps_hat(self, v_hat: Tensor) -> Tensor:
        """eps_hat from a network's v prediction at this batch's x_t."""
        return eps_from_v(self.x_t, v_hat.float(), self.alpha, self.sigma)


def add_noise(x: Tensor, schedule: Schedule, generator: torch.Generator | None = None,
              antithetic: bool = True) -> Noised:
    """Draw independent t (antithetic over the batch) and eps for x of shape (B, ...)."""
    t = sample_time(x.shape[0], antithetic=antithetic, generator=generator, device=x.device)
    logsnr = schedule.logsnr(t)
    alpha, sigma = alpha_sigma(expand_like(logsnr, x))
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    x_t = alpha * x.float() + sigma * eps
    return Noised(t, logsnr, schedule.neg_dlogsnr_dt(t), alpha, sigma, eps, x_t)
