"""The forward (noising) process for training: draw t, lambda(t), eps and x_t = alpha x + sigma eps.

Everything here is fp32, also under bf16 autocast: x_t is built from x cast to fp32, and a
network's bf16 output is cast to fp32 before eps_hat, so the losses and bounds computed from
(eps, eps_hat) are fp32 math; only the networks' matmuls and convolutions run in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ul_pipeline import distributed
from ul_pipeline.diffusion.losses import expand_like
from ul_pipeline.diffusion.parametrization import eps_from_v
from ul_pipeline.diffusion.schedules import Schedule, alpha_sigma
from ul_pipeline.diffusion.time_sampling import sample_time


@dataclass
class Noised:
    """One noised batch: t, logsnr and -dlambda/dt are (B,); alpha, sigma broadcast against x; all fp32."""

    t: Tensor
    logsnr: Tensor
    neg_dlogsnr_dt: Tensor
    alpha: Tensor
    sigma: Tensor
    eps: Tensor
    x_t: Tensor

    def eps_hat(self, v_hat: Tensor) -> Tensor:
        """eps_hat (fp32) from a network's v prediction at this batch's x_t (bf16 under autocast)."""
        return eps_from_v(self.x_t, v_hat.float(), self.alpha, self.sigma)  # fp32 before any loss math


def add_noise(x: Tensor, schedule: Schedule, generator: torch.Generator | None = None,
              antithetic: bool = True) -> Noised:
    """Draw independent t (antithetic over the batch) and eps for x of shape (B, ...)."""
    t = sample_time(x.shape[0], antithetic=antithetic, generator=generator, device=x.device)
    logsnr = schedule.logsnr(t)
    alpha, sigma = alpha_sigma(expand_like(logsnr, x))
    eps = distributed.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    x_t = alpha * x.float() + sigma * eps  # fp32 even when x is a bf16 encoder output
    return Noised(t, logsnr, schedule.neg_dlogsnr_dt(t), alpha, sigma, eps, x_t)
