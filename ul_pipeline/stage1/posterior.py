"""q(z0 | x): the encoder's output plus the encoding noise, fixed (UL) or learned (ablation).

UL fixes the noise (eq. 2): z0 = alpha0 z_clean + sigma0 eps with lambda(0) = logsnr_0. The
`learned` ablation (paper Table 6 D) lets the encoder add a per-element variance s^2 on top:

    y  = z_clean + s eps1                    (a draw of the "clean" latent)
    z0 = alpha0 y + sigma0 eps2   ~  N(alpha0 z_clean, alpha0^2 s^2 + sigma0^2)

The extra variance sits *before* the fixed noise, so z0 is still y seen at exactly lambda(0) and
a prior whose most precise level is lambda(0) still applies (see `DiffusionPrior`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ul_pipeline import distributed
from ul_pipeline.diffusion import alpha_sigma, sum_over_dims

LOGVAR_OFFSET = -8.0  # learned log s^2 starts near exp(-8): s ~ 0.02, a quarter of sigma0 at lambda(0)=5
LOGVAR_RANGE = (-30.0, 10.0)  # clamp, so exp() stays finite


@dataclass
class LatentPosterior:
    """q(z0 | x) for a batch: mean `z_clean` (B, C, h, w) and, when learned, the extra log-variance."""

    z_clean: Tensor
    logvar: Tensor | None  # log s^2 in z_clean units, (B, C, h, w); None = fixed noise only
    logsnr_0: float

    def _alpha_sigma(self) -> tuple[Tensor, Tensor]:
        return alpha_sigma(torch.tensor(self.logsnr_0, device=self.z_clean.device))

    def sample_clean(self, generator: torch.Generator | None = None) -> Tensor:
        """y = z_clean + s eps1 (z_clean itself for fixed noise)."""
        if self.logvar is None:
            return self.z_clean
        eps = distributed.randn(self.z_clean.shape, generator=generator, device=self.z_clean.device)
        return self.z_clean + torch.exp(0.5 * self.logvar) * eps

    def sample_z0(self, generator: torch.Generator | None = None) -> Tensor:
        """eq. 2, reparameterised (gradients reach the encoder): alpha0 z_clean + sqrt(var) eps."""
        alpha0, sigma0 = self._alpha_sigma()
        eps = distributed.randn(self.z_clean.shape, generator=generator, device=self.z_clean.device)
        if self.logvar is None:
            return alpha0 * self.z_clean + sigma0 * eps
        return alpha0 * self.z_clean + torch.sqrt(self.z0_variance()) * eps

    def z0_variance(self) -> Tensor:
        """Var(z0 | x) per element: alpha0^2 s^2 + sigma0^2 (sigma0^2 for fixed noise)."""
        alpha0, sigma0 = self._alpha_sigma()
        if self.logvar is None:
            return torch.full_like(self.z_clean, float(sigma0) ** 2)
        return alpha0**2 * torch.exp(self.logvar) + sigma0**2

    def noise_info_nats(self) -> Tensor:
        """I(y; z0 | x) per example: 1/2 sum log(1 + alpha0^2 s^2 / sigma0^2); 0 for fixed noise.

        What a bound on y over-counts as information in z0: E_y KL(q(z0|y) || p) =
        KL(q(z0|x) || p) + I(y; z0 | x) (chain rule), so subtracting it keeps an upper bound.
        """
        if self.logvar is None:
            return torch.zeros(self.z_clean.shape[0], device=self.z_clean.device)
        alpha0, sigma0 = self._alpha_sigma()
        return sum_over_dims(0.5 * torch.log1p(alpha0**2 * torch.exp(self.logvar.float()) / sigma0**2))


class EncoderNoise(nn.Module):
    """Turns the encoder's output into q(z0 | x) at lambda(0) = logsnr_0; `predicts_logvar` sizes the encoder."""

    predicts_logvar = False

    def __init__(self, logsnr_0: float):
        super().__init__()
        self.logsnr_0 = logsnr_0


class FixedNoise(EncoderNoise):
    """UL (eq. 2): the encoder's output is z_clean; the noise is sigma0 at lambda(0)."""

    def forward(self, encoder_out: Tensor) -> LatentPosterior:
        return LatentPosterior(encoder_out, None, self.logsnr_0)


class LearnedNoise(EncoderNoise):
    """Ablation (Table 6 D): the encoder outputs [z_clean, log s^2] on its channel axis."""

    predicts_logvar = True

    def forward(self, encoder_out: Tensor) -> LatentPosterior:
        z_clean, raw = encoder_out.chunk(2, dim=1)  # (B, C, h, w) each
        logvar = (raw + LOGVAR_OFFSET).clamp(*LOGVAR_RANGE)
        return LatentPosterior(z_clean, logvar, self.logsnr_0)


ENCODER_NOISES = {"fixed": FixedNoise, "learned": LearnedNoise}
