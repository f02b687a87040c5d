"""Stage 1: encoder, prior and decoder trained together on L = L_z + L_x (docs/concepts/method.md, Stage 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ul_pipeline import config as config_lib
from ul_pipeline.evaluation import metrics
from ul_pipeline.diffusion import Schedule, resolution_shift
from ul_pipeline.diffusion.solvers import SamplerSpec
from ul_pipeline.stage1.decoders import build_decoder
from ul_pipeline.stage1.posterior import ENCODER_NOISES, FixedNoise, LatentPosterior
from ul_pipeline.stage1.priors import LatentTerms, build_prior
from ul_pipeline.stage1.rate import RATE_LAWS, RateController


@dataclass
class Stage1Terms:
    """Per-example Stage-1 loss terms, each (B,) in nats summed over dimensions."""

    prior_diffusion_nats: Tensor
    prior_terminal_nats: Tensor
    decoder_nats: Tensor  # weighted, times c_lf: not a bound
    noise_credit_nats: Tensor | None = None  # I(y; z0 | x) of a learned encoder variance (subtracted)
    latent_weight: float = 1.0  # beta on L_z in the training loss (UL: 1)

    @property
    def latent_nats(self) -> Tensor:
        """L_z: an upper bound on the information in z0, nats per example."""
        lz = self.prior_diffusion_nats + self.prior_terminal_nats
        return lz if self.noise_credit_nats is None else lz - self.noise_credit_nats

    @property
    def total_nats(self) -> Tensor:
        """L = beta L_z + L_x per example (eq. 5 with beta = 1)."""
        return self.latent_weight * self.latent_nats + self.decoder_nats

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


def rate_floor_bits_per_pixel(prior: str, encoder_noise: str, logsnr_0: float, latent_shape, image_shape) -> float:
    """The least L_z a prior can charge: for a N(0, I) prior with fixed noise sigma0^2 = sigmoid(-logsnr_0),
    (sigma0^2 - log sigma0^2 - 1) / 2 nats per latent dimension (at z_clean = 0); 0 otherwise."""
    if prior != "normal" or encoder_noise != "fixed":
        return 0.0
    var0 = 1.0 / (1.0 + math.exp(logsnr_0))
    nats = 0.5 * (var0 - math.log(var0) - 1.0) * math.prod(latent_shape)
    return float(metrics.bits_per_pixel(nats, tuple(image_shape)))


class UnifiedLatents(nn.Module):
    """Encoder + encoding noise + prior + decoder with the UL objective; encode, reconstruct, decode.

    The prior (`DiffusionPrior` | `NormalPrior`), the decoder (`DiffusionDecoder` | `MSEDecoder`)
    and the noise (`FixedNoise` | `LearnedNoise`) are variants behind one interface each.
    """

    def __init__(self, encoder: nn.Module, prior: nn.Module, decoder: nn.Module, image_shape: tuple[int, ...],
                 *, noise: nn.Module | None = None, logsnr_0: float = 5.0, latent_weight: float = 1.0,
                 rate: RateController | None = None):
        super().__init__()
        self.encoder, self.prior, self.decoder = encoder, prior, decoder
        self.noise = noise or FixedNoise(logsnr_0)
        self.image_shape = tuple(image_shape)
        self.latent_shape = tuple(encoder.latent_shape)
        self.logsnr_0, self.latent_weight = logsnr_0, latent_weight
        self.rate = rate  # steers latent_weight toward a target rate during training (rate-matched baselines)

    @classmethod
    def from_config(cls, cfg) -> "UnifiedLatents":
        """Build from an ExperimentConfig (stage1 + data sections)."""
        from ul_pipeline.nets.presets import build_stage1_nets

        s1, data = cfg.stage1, cfg.data
        image_shape = config_lib.sample_shape(data)  # (C, H, W) or video (C, T, H, W)
        noise = ENCODER_NOISES[s1.encoder_noise](s1.logsnr_0)
        encoder, prior_net, decoder_net = build_stage1_nets(s1.preset, image_shape, s1.latent_channels,
                                                            predict_logvar=noise.predicts_logvar)
        shift = resolution_shift(data.resolution) if s1.decoder_shift else 0.0
        schedule = Schedule(s1.decoder_logsnr_min, s1.decoder_logsnr_max, shift)
        prior = build_prior(s1.prior, prior_net, s1.prior_logsnr_min, s1.logsnr_0)
        decoder = build_decoder(s1.decoder_loss, decoder_net, image_shape, schedule, s1.c_lf, s1.bias, s1.mse_sigma)
        rate = None
        if s1.target_bits_per_pixel > 0:
            floor = rate_floor_bits_per_pixel(s1.prior, s1.encoder_noise, s1.logsnr_0, encoder.latent_shape, image_shape)
            if s1.target_bits_per_pixel <= floor:
                raise config_lib.ConfigError(
                    f"config key 'stage1.target_bits_per_pixel': {s1.target_bits_per_pixel} is below what a "
                    f"{s1.prior} prior with {s1.encoder_noise} encoder noise can reach here ({floor:.4f} bits/pixel: "
                    "KL(N(m, sigma0^2) || N(0, 1)) >= (sigma0^2 - log sigma0^2 - 1) / 2 nats per latent dimension); "
                    "use stage1.encoder_noise=learned to let the variance grow")
            rate = RATE_LAWS[s1.rate_control](s1.target_bits_per_pixel, s1.rate_gain, beta0=s1.latent_weight,
                                              hold_steps=s1.encoder_hold_samples // s1.train.batch_size)
        return cls(encoder, prior, decoder, image_shape, noise=noise, logsnr_0=s1.logsnr_0,
                   latent_weight=s1.latent_weight, rate=rate)

    def posterior(self, x: Tensor) -> LatentPosterior:
        """q(z0 | x): the encoder's z_clean (and learned variance) with the noise at lambda(0)."""
        return self.noise(self.encoder(x).float())  # fp32 latents, also under bf16 autocast

    def encode(self, x: Tensor) -> Tensor:
        """z_clean = E(x), deterministic; x in [-1, 1]."""
        return self.posterior(x).z_clean

    def loss_terms(self, x: Tensor, generator: torch.Generator | None = None) -> Stage1Terms:
        """eq. 5: independent t and noise for both terms, one graph, no stop-gradients."""
        posterior = self.posterior(x)
        latent: LatentTerms = self.prior(posterior, generator)
        z0 = posterior.sample_z0(generator)
        l_x = self.decoder.loss_nats(x, z0, generator)
        beta = self.rate.beta if self.rate is not None else self.latent_weight
        return Stage1Terms(latent.diffusion_nats, latent.terminal_nats, l_x, latent.noise_credit_nats, beta)

    @torch.no_grad()
    def decode(self, z0: Tensor, steps: int, generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None, eta: float = 1.0,
               sampler: SamplerSpec | None = None) -> Tensor:
        """x ~ p(x | z0), images in [-1, 1] (one pass for the MSE decoder); eta as in ancestral_sample,
        `sampler` the decoder's grid and solver (diffusion/solvers.py; None: the paper's)."""
        return self.decoder.decode(z0, steps, generator, progress, eta=eta, sampler=sampler)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, steps: int, generator: torch.Generator | None = None,
                    eta: float = 1.0, sampler: SamplerSpec | None = None, draws: int = 1) -> Tensor:
        """x -> q(z0 | x) -> z0 -> one decoder sample (draws > 1: the mean of that many decoder samples
        of the same z0, a Monte-Carlo estimate of E[x | z0]; sample.reconstruction_draws)."""
        if draws < 1:
            raise ValueError(f"sample.reconstruction_draws must be >= 1 (1 = one decoder sample), got {draws}")
        z0 = self.posterior(x).sample_z0(generator)
        x_hat = self.decode(z0, steps, generator, eta=eta, sampler=sampler)
        for _ in range(draws - 1):
            x_hat = x_hat + self.decode(z0, steps, generator, eta=eta, sampler=sampler)
        return x_hat / draws if draws > 1 else x_hat

    @torch.no_grad()
    def latent_nats(self, x: Tensor, repeats: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Monte-Carlo L_z per example (w == 1), averaged over `repeats` draws of t and eps."""
        posterior = self.posterior(x)
        total = torch.zeros(x.shape[0], device=x.device)
        for _ in range(repeats):
            terms = self.prior(posterior, generator)
            total += terms.diffusion_nats + terms.terminal_nats - terms.noise_credit_nats
        return total / repeats
