"""Stage 2: a class-conditional base model on frozen, cached z_clean (docs/concepts/method.md, Stage 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ul_pipeline import distributed
from ul_pipeline.diffusion import Schedule, ancestral_sample, classifier_free_guidance, diffusion_term_nats, sigmoid_weight
from ul_pipeline.diffusion.forward import add_noise
from ul_pipeline.latents.standardize import Standardization


@dataclass
class Stage2Terms:
    """Per-example Stage-2 terms (B,), nats summed over latent dimensions."""

    weighted_nats: Tensor  # the training loss: sigmoid-weighted
    elbo_diffusion_nats: Tensor  # the same draw with w == 1, for monitoring only

    @classmethod
    def of(cls, noised, eps_hat: Tensor, bias: float) -> "Stage2Terms":
        """The sigmoid-weighted loss and the w == 1 ELBO term of one noised draw and its prediction."""
        weighted = diffusion_term_nats(noised.eps, eps_hat, noised.neg_dlogsnr_dt, sigmoid_weight(noised.logsnr, bias))
        elbo = diffusion_term_nats(noised.eps, eps_hat, noised.neg_dlogsnr_dt, torch.ones_like(noised.logsnr))
        return cls(weighted, elbo.detach())

    def summary(self) -> dict[str, float]:
        return {"loss_nats": self.weighted_nats.detach().float().mean().item(),
                "elbo_diffusion_nats": self.elbo_diffusion_nats.detach().float().mean().item()}


class BaseModel(nn.Module):
    """Denoiser on z_clean whose most precise level is tied to the encoder's lambda(0).

    With a `standardization` it models u = (z_clean - shift) / scale and ends at the level that
    keeps the decoder's z0 exact (ul_pipeline/latents/standardize.py); inputs and outputs stay in
    the encoder's units either way.
    """

    def __init__(self, net: nn.Module, latent_shape: tuple[int, ...], num_classes: int, *,
                 logsnr_0: float = 5.0, logsnr_min: float = -15.0, bias: float = 0.0,
                 label_dropout: float = 0.1, standardization: Standardization | None = None):
        super().__init__()
        self.net = net
        self.latent_shape = tuple(latent_shape)
        self.num_classes = num_classes  # label id num_classes is the null label
        self.logsnr_0, self.standardization = logsnr_0, standardization
        end = logsnr_0 if standardization is None else standardization.logsnr_0(logsnr_0)
        self.schedule = Schedule(logsnr_min, end)  # sec. 3: ends at lambda(0), not a free knob
        self.bias, self.label_dropout = bias, label_dropout

    @classmethod
    def from_config(cls, cfg, latent_shape: tuple[int, ...],
                    standardization: Standardization | None = None) -> "BaseModel":
        """Build from an ExperimentConfig (stage2 section, data.num_classes, stage1.logsnr_0)."""
        from ul_pipeline.nets.presets import build_base_model

        net = build_base_model(cfg.stage2.preset, tuple(latent_shape), cfg.data.num_classes)
        return cls(net, latent_shape, cfg.data.num_classes, logsnr_0=cfg.stage1.logsnr_0,
                   logsnr_min=cfg.stage2.logsnr_min, bias=cfg.stage2.bias,
                   label_dropout=cfg.stage2.label_dropout, standardization=standardization)

    def drop_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Replace each label by the null label with probability label_dropout."""
        drop = distributed.rand(labels.shape, generator=generator, device=labels.device) < self.label_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def loss_terms(self, z_clean: Tensor, labels: Tensor, generator: torch.Generator | None = None,
                   z_logvar: Tensor | None = None) -> Stage2Terms:
        """Sigmoid-weighted eps-MSE on z_t = alpha z_clean + sigma eps; noise drawn here, never stored.

        With `z_logvar` (a learned encoder variance) each draw first takes y = z_clean + s eps1,
        the latent whose lambda(0) view is z0, so no single draw is frozen in the cache.
        """
        z_clean = self.latent_draw(z_clean, z_logvar, generator)
        labels = self.drop_labels(labels, generator) if self.training else labels
        noised = add_noise(z_clean, self.schedule, generator)
        eps_hat = noised.eps_hat(self.net(noised.x_t, noised.logsnr, labels))
        return Stage2Terms.of(noised, eps_hat, self.bias)

    def latent_draw(self, z_clean: Tensor, z_logvar: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """What the model is trained to generate: z_clean (standardised when configured), plus s eps1 with a
        learned encoder variance."""
        if self.standardization is not None:
            z_clean = self.standardization.forward(z_clean)
            z_logvar = None if z_logvar is None else self.standardization.logvar(z_logvar)
        if z_logvar is not None:
            z_clean = z_clean + torch.exp(0.5 * z_logvar) * distributed.randn(z_clean.shape, generator=generator,
                                                                        device=z_clean.device)
        return z_clean

    def batch_conditioning(self, batch: dict[str, Tensor]) -> dict:
        """The keyword arguments of `loss_terms` beyond labels that this model reads from a named Stage-2 batch
        (the class-conditional model: none; variants override)."""
        return {}

    @torch.no_grad()
    def sample_z0(self, labels: Tensor, steps: int, guidance: float = 0.0,
                  generator: torch.Generator | None = None,
                  progress: Callable[[int, int], None] | None = None, eta: float = 1.0,
                  guidance_interval: tuple[float, float] | None = None) -> Tensor:
        """Ancestral (eta 1) or DDIM-family sampling from lambda_min down to lambda(0): a z0 for the decoder.
        guidance_interval: the log-SNR range where guidance applies (None: every step)."""
        denoise = classifier_free_guidance(self.net, labels, self.num_classes, guidance, guidance_interval)
        z0 = ancestral_sample(denoise, (labels.shape[0], *self.latent_shape), self.schedule, steps,
                              final="noisy", eta=eta, generator=generator, device=labels.device,
                              progress=progress)
        return self.to_z0(z0)

    def to_z0(self, z0: Tensor) -> Tensor:
        """The sampler's end point in the decoder's units (standardisation undone exactly)."""
        return z0 if self.standardization is None else self.standardization.z0(z0, self.logsnr_0)
