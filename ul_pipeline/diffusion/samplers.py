"""Ancestral sampling in lambda and classifier-free guidance (docs/concepts/method.md, Stage 2)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ul_pipeline.diffusion.parametrization import x_from_v
from ul_pipeline.diffusion.schedules import Schedule, alpha_sigma

# A denoiser maps (z_t, logsnr [B]) to v_hat with z_t's shape.
Denoiser = Callable[[Tensor, Tensor], Tensor]


def ancestral_step(z_t: Tensor, x_hat: Tensor, logsnr_t: Tensor, logsnr_s: Tensor,
                   noise: Tensor, eta: float = 1.0) -> Tensor:
    """One step t -> s (lambda_s > lambda_t), c = 1 - e^(lambda_t - lambda_s).

    eta = 1: a draw from q(z_s | z_t, x_hat) (ancestral). Other eta (DDIM's): variance eta^2 sigma_s^2 c
    and mean alpha_s x_hat + sigma_s sqrt(1 - eta^2 c) eps_hat, so eta = 0 is the deterministic DDIM step.
    """
    alpha_t, sigma_t = alpha_sigma(logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    c = -torch.expm1(logsnr_t - logsnr_s)
    if eta == 1.0:
        mean = alpha_s * (z_t * (1.0 - c) / alpha_t + c * x_hat)
    else:
        eps_hat = (z_t - alpha_t * x_hat) / sigma_t
        mean = alpha_s * x_hat + sigma_s * (1.0 - eta**2 * c).clamp(min=0.0).sqrt() * eps_hat
    return mean + eta * (sigma_s**2 * c).sqrt() * noise


@torch.no_grad()
def ancestral_sample(denoise: Denoiser, shape: tuple[int, ...], schedule: Schedule, steps: int, *,
                     final: str = "noisy", clip_x: float | None = None, eta: float = 1.0,
                     generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                     progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Sample from lambda_min down to lambda_max in `steps` ancestral steps, uniform in t.

    final="noisy" returns z at lambda_max (the base model's z0 at lambda(0) = 5);
    final="clean" returns the denoised x_hat at lambda_max (the decoder's image).
    eta: 1 ancestral, 0 deterministic DDIM, between: DDIM's interpolation (see ancestral_step).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if final not in ("noisy", "clean"):
        raise ValueError(f"final must be 'noisy' or 'clean', got {final!r}")
    ts = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)
    logsnrs = schedule.logsnr(ts).float()  # increasing: lambda_min ... lambda_max
    z = torch.randn(shape, generator=generator, device=device)
    batch = shape[0]

    def predict_x(z: Tensor, logsnr: Tensor) -> Tensor:
        lam = logsnr.expand(batch)
        alpha, sigma = alpha_sigma(logsnr)
        x_hat = x_from_v(z, denoise(z, lam).float(), alpha, sigma)
        return x_hat.clamp(-clip_x, clip_x) if clip_x is not None else x_hat

    for i in range(steps):
        x_hat = predict_x(z, logsnrs[i])
        noise = torch.randn(shape, generator=generator, device=device)
        z = ancestral_step(z, x_hat, logsnrs[i], logsnrs[i + 1], noise, eta)
        if progress is not None:
            progress(i + 1, steps)
    return predict_x(z, logsnrs[-1]) if final == "clean" else z


def classifier_free_guidance(denoise: Callable[[Tensor, Tensor, Tensor], Tensor], labels: Tensor,
                             null_label: int, guidance: float,
                             interval: tuple[float, float] | None = None) -> Denoiser:
    """v = (1 + w) v(z | y) - w v(z | null); linear in v, so equal to guiding eps or x. w = 0: conditional.

    interval (lo, hi): guide only at log-SNRs in [lo, hi] and take the conditional v elsewhere (a limited
    guidance interval, Kynkaanniemi et al. 2024: guidance at the noisiest levels mostly costs diversity).
    None guides at every level. A sampler step evaluates one log-SNR for the whole batch.
    """
    if guidance == 0.0:
        return lambda z, logsnr: denoise(z, logsnr, labels)
    if interval is not None:
        interval = (float(interval[0]), float(interval[1]))  # also a config's [lo, hi] list
        if not interval[0] <= interval[1]:
            raise ValueError(f"guidance interval {interval}: must be (lo, hi) with lo <= hi, in log-SNR")
    null = torch.full_like(labels, null_label)

    def guided(z: Tensor, logsnr: Tensor) -> Tensor:
        if interval is not None and not interval[0] <= float(logsnr[0]) <= interval[1]:
            return denoise(z, logsnr, labels)
        v = denoise(torch.cat([z, z]), torch.cat([logsnr, logsnr]), torch.cat([labels, null]))
        v_cond, v_uncond = v.chunk(2)
        return (1.0 + guidance) * v_cond - guidance * v_uncond

    return guided
