"""Stage 1: encoder, prior and decoder trained together on L = L_z + L_x (UL_METHOD.md sec. 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ul_pipeline import metrics
from ul_pipeline.diffusion import (
    Schedule, alpha_sigma, ancestral_sample, diffusion_term_nats, elbo_weight, resolution_shift,
    sigmoid_weight, terminal_kl_nats,
)
from ul_pipeline.diffusion.forward import add_noise


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


def decoder_term(decoder: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, z0: Tensor,
                 schedule: Schedule, c_lf: float, bias: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """eq. 4: c_lf * 1/2 sigmoid(b - lambda) (-dlambda/dt) ||eps - eps_hat(x_t, lambda, z0)||^2 per example."""
    noised = add_noise(x, schedule, generator)
    eps_hat = noised.eps_hat(decoder(noised.x_t, noised.logsnr, z0))
    weight = sigmoid_weight(noised.logsnr, bias)
    return c_lf * diffusion_term_nats(noised.eps, eps_hat, noised.neg_dlogsnr_dt, weight)


@dataclass
class Stage1Terms:
    """Per-example Stage-1 loss terms, each (B,) in nats summed over dimensions."""

    prior_diffusion_nats: Tensor
    prior_terminal_nats: Tensor
    decoder_nats: Tensor  # weighted, times c_lf: not a bound

    @property
    def latent_nats(self) -> Tensor:
        """L_z: an upper bound on the information in z0, nats per example."""
        return self.prior_diffusion_nats + self.prior_terminal_nats

    @property
    def total_nats(self) -> Tensor:
        """L = L_z + L_x per example (eq. 5)."""
        return self.latent_nats + self.decoder_nats

    def summary(self, image_shape: tuple[int, ...], latent_shape: tuple[int, ...]) -> dict[str, float]:
        """Batch means as plain floats, with the bitrate in every unit (sec. 2.7)."""
        lz = self.latent_nats.detach().float().mean().item()
        return {
            "loss_nats": self.total_nats.detach().float().mean().item(),
            "latent_nats": lz,
            "prior_terminal_nats": self.prior_terminal_nats.detach().float().mean().item(),
            "decoder_nats": self.decoder_nats.detach().float().mean().item(),
            "bits_per_image": metrics.bits_per_image(lz),
            "bits_per_pixel": metrics.bits_per_pixel(lz, image_shape),
            "bits_per_latent_dim": metrics.bits_per_latent_dim(lz, latent_shape),
        }


class UnifiedLatents(nn.Module):
    """Encoder + prior + decoder with the UL objective; encode, reconstruct and decode."""

    def __init__(self, encoder: nn.Module, prior: nn.Module, decoder: nn.Module,
                 image_shape: tuple[int, ...], *, logsnr_0: float = 5.0, prior_logsnr_min: float = -15.0,
                 decoder_schedule: Schedule | None = None, c_lf: float = 1.5, bias: float = 0.0):
        super().__init__()
        self.encoder, self.prior, self.decoder = encoder, prior, decoder
        self.image_shape = tuple(image_shape)
        self.latent_shape = tuple(encoder.latent_shape)
        self.logsnr_0 = logsnr_0
        self.prior_schedule = Schedule(prior_logsnr_min, logsnr_0)  # eq. 3: ends exactly at lambda(0)
        self.decoder_schedule = decoder_schedule or Schedule(-10.0, 10.0, resolution_shift(image_shape[-1]))
        self.c_lf, self.bias = c_lf, bias

    @classmethod
    def from_config(cls, cfg) -> "UnifiedLatents":
        """Build from an ExperimentConfig (stage1 + data sections)."""
        from ul_pipeline.nets.presets import build_stage1_nets

        s1, data = cfg.stage1, cfg.data
        image_shape = (data.channels, data.resolution, data.resolution)
        encoder, prior, decoder = build_stage1_nets(s1.preset, image_shape, s1.latent_channels)
        shift = resolution_shift(data.resolution) if s1.decoder_shift else 0.0
        return cls(encoder, prior, decoder, image_shape, logsnr_0=s1.logsnr_0,
                   prior_logsnr_min=s1.prior_logsnr_min,
                   decoder_schedule=Schedule(s1.decoder_logsnr_min, s1.decoder_logsnr_max, shift),
                   c_lf=s1.c_lf, bias=s1.bias)

    def encode(self, x: Tensor) -> Tensor:
        """z_clean = E(x), deterministic; x in [-1, 1]."""
        return self.encoder(x)

    def add_encoder_noise(self, z_clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """eq. 2: z0 = alpha0 z_clean + sigma0 eps at lambda(0), reparameterised (gradients reach E)."""
        alpha0, sigma0 = alpha_sigma(torch.tensor(self.logsnr_0, device=z_clean.device))
        eps = torch.randn(z_clean.shape, generator=generator, device=z_clean.device)
        return alpha0 * z_clean + sigma0 * eps

    def loss_terms(self, x: Tensor, generator: torch.Generator | None = None) -> Stage1Terms:
        """eq. 5: independent t and noise for both terms, one graph, no stop-gradients."""
        z_clean = self.encode(x)
        diffusion, terminal = prior_terms(self.prior, z_clean, self.prior_schedule, generator)
        z0 = self.add_encoder_noise(z_clean, generator)
        l_x = decoder_term(self.decoder, x, z0, self.decoder_schedule, self.c_lf, self.bias, generator)
        return Stage1Terms(diffusion, terminal, l_x)

    @torch.no_grad()
    def decode(self, z0: Tensor, steps: int, generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None) -> Tensor:
        """Sample x ~ p(x | z0) with the decoder's ancestral sampler; images in [-1, 1]."""
        shape = (z0.shape[0], *self.image_shape)
        return ancestral_sample(lambda x_t, lam: self.decoder(x_t, lam, z0), shape, self.decoder_schedule,
                                steps, final="clean", clip_x=1.0, generator=generator, device=z0.device,
                                progress=progress)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
        """x -> z_clean -> z0 -> one decoder sample."""
        return self.decode(self.add_encoder_noise(self.encode(x), generator), steps, generator)

    @torch.no_grad()
    def latent_nats(self, x: Tensor, repeats: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Monte-Carlo L_z per example (w == 1), averaged over `repeats` draws of t and eps."""
        z_clean = self.encode(x)
        total = torch.zeros(x.shape[0], device=x.device)
        for _ in range(repeats):
            diffusion, terminal = prior_terms(self.prior, z_clean, self.prior_schedule, generator)
            total += diffusion + terminal
        return total / repeats

