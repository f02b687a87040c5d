"""The decoder's sampler choices: which log-SNR grid, which solver, where the grid stops.

`ancestral_sample` (samplers.py) is the paper's sampler: `steps` ancestral steps uniform in t on the
schedule, then x_hat at lambda_max. Measured on trained Stage-1 decoders (benchmarks/decoder_sampling.py)
that grid leaves one large last step (at 32x32, 16 steps: lambda 5.8 -> 11.4), and the network's
x-prediction at lambda ~ 6 still carries part of the noise it was given as image content: the
decoded images show channel-independent speckle. The alternatives here change only how the decoder is
sampled (no retraining), and `SamplerSpec()` is the paper's setting, bit for bit:

- grid "t" (uniform in t, the paper's) or "logsnr" (uniform in log-SNR, more steps at high log-SNR);
- solver "ancestral" (eta as in `ancestral_step`) or "dpm2m": DPM-Solver++(2M) (Lu et al. 2022), a
  deterministic second-order multistep solver of the probability-flow ODE in x-prediction form;
- logsnr_end: the grid stops at this log-SNR and the image is x_hat there (None: the schedule's end);
- clip: False clamps only the returned image, not each step's x_hat. Where the data sit at the edge of
  [-1, 1] (a white or black background) the per-step clamp cuts one side of the network's uncertainty
  and the chain drifts inwards (measured: most of the darkening of the emoji's white background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ul_pipeline.diffusion.parametrization import x_from_v
from ul_pipeline.diffusion.samplers import Denoiser, ancestral_step
from ul_pipeline.diffusion.schedules import Schedule, alpha_sigma

SOLVERS = ("ancestral", "dpm2m")
GRIDS = ("t", "logsnr")


@dataclass(frozen=True)
class SamplerSpec:
    """How to sample a diffusion decoder; the defaults are the paper's (and ancestral_sample's)."""

    solver: str = "ancestral"  # ancestral | dpm2m
    grid: str = "t"  # t | logsnr
    logsnr_end: Optional[float] = None  # None: the schedule's logsnr_max
    clip: bool = True  # clamp x_hat to [-1, 1] at every step (the paper's); False: only the returned image

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"decoder sampler: unknown solver {self.solver!r} (known: {', '.join(SOLVERS)})")
        if self.grid not in GRIDS:
            raise ValueError(f"decoder sampler: unknown grid {self.grid!r} (known: {', '.join(GRIDS)})")

    @property
    def is_paper(self) -> bool:
        return self == SamplerSpec()


def t_of_logsnr(schedule: Schedule, logsnr: float) -> float:
    """The inverse of the truncated cosine schedule: t with schedule.logsnr(t) = logsnr."""
    t_min = math.atan(math.exp(-0.5 * (schedule.logsnr_max - schedule.shift)))
    t_max = math.atan(math.exp(-0.5 * (schedule.logsnr_min - schedule.shift)))
    return (math.atan(math.exp(-0.5 * (logsnr - schedule.shift))) - t_min) / (t_max - t_min)


def logsnr_grid(schedule: Schedule, steps: int, grid: str = "t", logsnr_end: float | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """steps + 1 increasing log-SNRs (fp32) from the schedule's logsnr_min to logsnr_end (or its max)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    end = schedule.logsnr_max if logsnr_end is None else float(logsnr_end)
    if not schedule.logsnr_min < end <= schedule.logsnr_max:
        raise ValueError(f"decoder sampler: logsnr_end {end} must lie in ({schedule.logsnr_min:.3f}, "
                         f"{schedule.logsnr_max:.3f}], the decoder schedule's range (after its shift)")
    if grid == "t":
        t_end = 0.0 if logsnr_end is None else t_of_logsnr(schedule, end)
        ts = torch.linspace(1.0, t_end, steps + 1, device=device, dtype=torch.float64)
        logsnrs = schedule.logsnr(ts)
        if logsnr_end is not None:
            logsnrs[-1] = end  # exact end point, not the inverse's rounding
        return logsnrs.float()
    return torch.linspace(schedule.logsnr_min, end, steps + 1, device=device, dtype=torch.float64).float()


@torch.no_grad()
def sample_clean(denoise: Denoiser, shape: tuple[int, ...], schedule: Schedule, steps: int,
                 spec: SamplerSpec = SamplerSpec(), *, clip_x: float | None = None, eta: float = 1.0,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 progress: Callable[[int, int], None] | None = None) -> Tensor:
    """x_hat after `steps` solver steps on `spec`'s grid, from pure noise at the schedule's logsnr_min.

    The ancestral solver is `ancestral_step` (eta: 1 ancestral, 0 DDIM). dpm2m is deterministic (eta
    unused): with lambda' = lambda / 2 = log(alpha / sigma) and h = lambda'_i - lambda'_(i-1),
    z_i = sigma_i / sigma_(i-1) z_(i-1) - alpha_i expm1(-h) D, D = (1 + 1/2r) x_(i-1) - 1/2r x_(i-2),
    r = h_(i-1) / h; D = x_(i-1) (a DDIM step) on the first and on the last step (lower order at the
    end, where the grid's last step can be far longer than the one before it).
    """
    logsnrs = logsnr_grid(schedule, steps, spec.grid, spec.logsnr_end, device)
    z = torch.randn(shape, generator=generator, device=device)
    batch = shape[0]

    def predict_x(z: Tensor, logsnr: Tensor) -> Tensor:
        alpha, sigma = alpha_sigma(logsnr)
        x_hat = x_from_v(z, denoise(z, logsnr.expand(batch)).float(), alpha, sigma)
        return x_hat.clamp(-clip_x, clip_x) if clip_x is not None and spec.clip else x_hat

    x_prev, h_prev = None, None
    for i in range(steps):
        lam_t, lam_s = logsnrs[i], logsnrs[i + 1]
        x_hat = predict_x(z, lam_t)
        if spec.solver == "ancestral":
            noise = torch.randn(shape, generator=generator, device=device)
            z = ancestral_step(z, x_hat, lam_t, lam_s, noise, eta)
        else:
            (alpha_t, sigma_t), (alpha_s, sigma_s) = alpha_sigma(lam_t), alpha_sigma(lam_s)
            h = 0.5 * (lam_s - lam_t)
            d = x_hat
            if x_prev is not None and i < steps - 1:
                r = h_prev / h
                d = (1.0 + 0.5 / r) * x_hat - (0.5 / r) * x_prev
            z = (sigma_s / sigma_t) * z - alpha_s * torch.expm1(-h) * d
            x_prev, h_prev = x_hat, h
        if progress is not None:
            progress(i + 1, steps)
    x = predict_x(z, logsnrs[-1])
    return x.clamp(-clip_x, clip_x) if clip_x is not None else x


def decoder_sampler(sample_config) -> SamplerSpec:
    """The decoder's SamplerSpec from a config's `sample` section: the paper's grid and solver (measured no
    better on trained decoders, benchmarks/decoder_sampling.py), `sample.decoder_clip`."""
    return SamplerSpec(clip=sample_config.decoder_clip)
