"""Pixel decoders p(x | z0): each gives L_x per example and decodes z0 to images.

`DiffusionDecoder` is UL's (eq. 4); `MSEDecoder` is the deterministic ablation (paper Table 5).
Both have `loss_nats(x, z0, generator)` and `decode(z0, steps, generator, progress)`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ul_pipeline.diffusion import Schedule, ancestral_sample, diffusion_term_nats, sigmoid_weight, sum_over_dims
from ul_pipeline.diffusion.forward import add_noise
from ul_pipeline.diffusion.solvers import SamplerSpec, sample_clean

Progress = Callable[[int, int], None]


def decoder_term(decoder: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, z0: Tensor,
                 schedule: Schedule, c_lf: float, bias: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """eq. 4: c_lf * 1/2 sigmoid(b - lambda) (-dlambda/dt) ||eps - eps_hat(x_t, lambda, z0)||^2 per example."""
    noised = add_noise(x, schedule, generator)
    eps_hat = noised.eps_hat(decoder(noised.x_t, noised.logsnr, z0))
    weight = sigmoid_weight(noised.logsnr, bias)
    return c_lf * diffusion_term_nats(noised.eps, eps_hat, noised.neg_dlogsnr_dt, weight)


class DiffusionDecoder(nn.Module):
    """UL (eq. 4): a diffusion model on pixels conditioned on z0, sigmoid-weighted, times c_lf."""

    def __init__(self, net: Callable[[Tensor, Tensor, Tensor], Tensor], image_shape: tuple[int, ...],
                 schedule: Schedule, c_lf: float, bias: float):
        super().__init__()
        self.net, self.image_shape, self.schedule = net, tuple(image_shape), schedule
        self.c_lf, self.bias = c_lf, bias

    def loss_nats(self, x: Tensor, z0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return decoder_term(self.net, x, z0, self.schedule, self.c_lf, self.bias, generator)

    @torch.no_grad()
    def decode(self, z0: Tensor, steps: int, generator: torch.Generator | None = None,
               progress: Progress | None = None, eta: float = 1.0, sampler: SamplerSpec | None = None) -> Tensor:
        """Sample x ~ p(x | z0) (eta 1 ancestral, 0 DDIM; `sampler`: grid, solver, end); images in [-1, 1]."""
        shape = (z0.shape[0], *self.image_shape)
        denoise = lambda x_t, lam: self.net(x_t, lam, z0)  # noqa: E731
        if sampler is None or sampler.is_paper:  # the paper's sampler, exactly as it always ran
            return ancestral_sample(denoise, shape, self.schedule, steps, final="clean", clip_x=1.0, eta=eta,
                                    generator=generator, device=z0.device, progress=progress)
        return sample_clean(denoise, shape, self.schedule, steps, sampler, clip_x=1.0, eta=eta,
                            generator=generator, device=z0.device, progress=progress)


class MSEDecoder(nn.Module):
    """Ablation (Table 5): x_hat = D(z0), one deterministic pass; L_x = c_lf ||x - x_hat||^2 / (2 s^2).

    D is the preset's decoder network with a constant input (x_t = 0, lambda = 0), so the ablation
    changes the loss and the decoding, not the capacity. The squared error is summed over pixels
    (in [-1, 1]) like L_z is over latent dimensions: a Gaussian likelihood with fixed std s
    (`stage1.mse_sigma`), up to a constant.
    """

    def __init__(self, net: Callable[[Tensor, Tensor, Tensor], Tensor], image_shape: tuple[int, ...],
                 c_lf: float, sigma: float):
        super().__init__()
        self.net, self.image_shape = net, tuple(image_shape)
        self.c_lf, self.sigma = c_lf, sigma

    def predict(self, z0: Tensor) -> Tensor:
        x_in = torch.zeros(z0.shape[0], *self.image_shape, device=z0.device)
        return self.net(x_in, torch.zeros(z0.shape[0], device=z0.device), z0).float()  # (B, C, H, W)

    def loss_nats(self, x: Tensor, z0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.c_lf * sum_over_dims((x.float() - self.predict(z0)) ** 2) / (2 * self.sigma**2)

    @torch.no_grad()
    def decode(self, z0: Tensor, steps: int = 0, generator: torch.Generator | None = None,
               progress: Progress | None = None, eta: float = 1.0, sampler: SamplerSpec | None = None) -> Tensor:
        """x_hat = D(z0) in [-1, 1]; `steps`, `generator`, `eta`, `sampler` are unused (nothing to sample)."""
        x = self.predict(z0).clamp(-1.0, 1.0)
        if progress is not None:
            progress(1, 1)
        return x


def build_decoder(kind: str, net: nn.Module, image_shape: tuple[int, ...], schedule: Schedule,
                  c_lf: float, bias: float, mse_sigma: float) -> nn.Module:
    """`stage1.decoder_loss`: diffusion (UL) or mse."""
    if kind == "diffusion":
        return DiffusionDecoder(net, image_shape, schedule, c_lf, bias)
    if kind == "mse":
        return MSEDecoder(net, image_shape, c_lf, mse_sigma)
    raise ValueError(f"stage1.decoder_loss: unknown decoder '{kind}' (known: diffusion, mse)")
