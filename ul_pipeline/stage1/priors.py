"""Latent priors: each returns L_z terms, an upper bound on the information in z0 (nats per example).

`DiffusionPrior` is UL's (eq. 3); `NormalPrior` is the VAE-style ablation (paper Table 5).
Both take a `LatentPosterior` and return `LatentTerms`; `UnifiedLatents` never asks which it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ul_pipeline.diffusion import Schedule, diffusion_term_nats, elbo_weight, sum_over_dims, terminal_kl_nats
from ul_pipeline.diffusion.forward import add_noise
from ul_pipeline.stage1.posterior import LatentPosterior


def prior_terms(prior: Callable[[Tensor, Tensor], Tensor], z_clean: Tensor, schedule: Schedule,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """eq. 3: (diffusion, terminal KL) nats per example of the UNWEIGHTED prior ELBO on z_clean.

    w must be 1 (a weighted prior lets the encoder hide information); the schedule's most
    precise level must equal the encoder noise lambda(0), so the sum bounds the bits in z0.
    """
    noised = add_noise(z_clean, schedule, generator)
    eps_hat = noised.eps_hat(prior(noised.x_t, noised.logsnr))
    diffusion = diffusion_term_nats(noised.eps, eps_hat, noised.neg_dlogsnr_dt, elbo_weight(noised.logsnr))
    return diffusion, terminal_kl_nats(z_clean, schedule.logsnr_min)


def gaussian_kl_nats(mean: Tensor, var: Tensor) -> Tensor:
    """KL(N(mean, var) || N(0, I)) summed over dims: 1/2 sum(mean^2 + var - log var - 1), (B,)."""
    mean, var = mean.float(), var.float()
    return sum_over_dims(0.5 * (mean**2 + var - torch.log(var) - 1.0))


@dataclass
class LatentTerms:
    """L_z = diffusion + terminal - noise_credit, each (B,) nats."""

    diffusion_nats: Tensor  # 0 for the normal prior
    terminal_nats: Tensor  # the prior ELBO's terminal KL; for the normal prior, the whole KL
    noise_credit_nats: Tensor  # I(y; z0 | x) of a learned encoder variance, else 0


class DiffusionPrior(nn.Module):
    """UL (eq. 3): a diffusion model on latents, unweighted ELBO, most precise level lambda(0).

    With fixed noise the ELBO on z_clean bounds KL(q(z0|x) || p(z0)). With a learned variance,
    z0 = alpha0 y + sigma0 eps for a draw y ~ N(z_clean, s^2): the ELBO on y bounds
    KL(N(alpha0 y, sigma0^2) || p), whose mean over y is KL(q(z0|x) || p) + I(y; z0 | x). So
    L_z = E_y[ELBO(y)] - I(y; z0 | x) is still an upper bound, exact when the ELBO is
    (tests/test_ablations.py checks it in closed form on Gaussian latents).
    """

    def __init__(self, net: Callable[[Tensor, Tensor], Tensor], logsnr_min: float, logsnr_0: float):
        super().__init__()
        self.net = net
        self.schedule = Schedule(logsnr_min, logsnr_0)  # eq. 3: ends exactly at lambda(0)

    def forward(self, posterior: LatentPosterior, generator: torch.Generator | None = None) -> LatentTerms:
        y = posterior.sample_clean(generator)
        diffusion, terminal = prior_terms(self.net, y, self.schedule, generator)
        return LatentTerms(diffusion, terminal, posterior.noise_info_nats())


class NormalPrior(nn.Module):
    """Ablation (Table 5): p(z0) = N(0, I), so L_z = KL(q(z0|x) || N(0, I)) in closed form.

    With fixed noise that is 1/2 sum(alpha0^2 z_clean^2 + sigma0^2 - log sigma0^2 - 1): still an
    upper bound on the bits in z0, just a looser one than the diffusion prior's.
    """

    def __init__(self, logsnr_0: float):
        super().__init__()
        self.logsnr_0 = logsnr_0

    def forward(self, posterior: LatentPosterior, generator: torch.Generator | None = None) -> LatentTerms:
        alpha0_sq = torch.sigmoid(torch.tensor(self.logsnr_0, device=posterior.z_clean.device))
        kl = gaussian_kl_nats(alpha0_sq.sqrt() * posterior.z_clean, posterior.z0_variance())
        zeros = torch.zeros_like(kl)
        return LatentTerms(zeros, kl, zeros)


def build_prior(kind: str, net: nn.Module, logsnr_min: float, logsnr_0: float) -> nn.Module:
    """`stage1.prior`: diffusion (UL) or normal; the preset's prior network is unused by `normal`."""
    if kind == "diffusion":
        return DiffusionPrior(net, logsnr_min, logsnr_0)
    if kind == "normal":
        return NormalPrior(logsnr_0)
    raise ValueError(f"stage1.prior: unknown prior '{kind}' (known: diffusion, normal)")
