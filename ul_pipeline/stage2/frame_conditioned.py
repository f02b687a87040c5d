"""Stage 2 for video: a base model that continues a clip from context latent frames.

How context frames map onto latents. The Stage-1 encoder folds `time_patch` consecutive frames
into one latent frame (non-causal, ul_pipeline/nets/encoder.py), so context comes in whole groups:
`stage2.context_frames` must be a multiple of time_patch = data.frames / t, and the first
context_frames / time_patch latent frames are the context. With 16 frames -> 4 latents, the paper's
"5 context frames, generate 11" becomes 4 context frames (latent frame 0), 12 generated (1..3);
a 5th frame would share latent frame 1 with frames 6-8 that are to be generated.

Context lives in z0 space, the base model's output space: in training the context frames of the
network input are z0 = alpha0 z_clean + sigma0 eps (what the decoder reads) with z_clean taken from
the encoding of the clip padded after its context frames (`context_z_clean`, the latent store's
z_clean_context), which is what sampling encodes (ul_pipeline/latents/encode.py says why); the
whole clip's latents would carry the frames to be generated into the context. The rest is z_t, and
only the generated frames enter the loss. The network is told which frames are context
(`BaseViT(context=True)`). Classifier-free guidance subtracts one branch,
v = (1 + w) v(z | context, label) - w v(z | no context, null label), so that branch is what must be
trained: label and context are dropped by one uniform draw u per clip (`conditioning_drops`), the
label when u < label_dropout and the context when u < context_dropout. Both go together with
probability min(label_dropout, context_dropout) (the default 0.1 and 0.1: every dropped clip is the
guidance branch; independent drops gave it 0.01). A larger context_dropout adds clips trained with
their label but no context (label-conditioned clips from nothing), a larger label_dropout clips
with context but no label. The sampler writes the given context into z before every step and
returns it untouched. The guidance branch sees at sampling what a dropped clip saw in training: no
clean context, the context frames at the step's noise level like the rest (a draw of
q(z_t | z0 = context), fresh at every step) under the null label and an all-False context mask;
only the conditional branch reads the clean context. Before this, both branches read the clean
context, so the subtracted branch was one the network had never been trained on.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ul_pipeline import distributed
from ul_pipeline.diffusion import alpha_sigma, ancestral_sample, expand_like
from ul_pipeline.diffusion.forward import add_noise
from ul_pipeline.stage2.model import BaseModel, Stage2Terms


def context_latent_frames(context_frames: int, frames: int, latent_frames: int) -> int:
    """Latent frames holding `context_frames` pixel frames; ValueError unless whole groups."""
    if latent_frames <= 0 or frames % latent_frames:
        raise ValueError(f"stage2.context_frames: {frames} frames do not map onto {latent_frames} latent frames")
    time_patch = frames // latent_frames
    if context_frames % time_patch or not 0 <= context_frames // time_patch < latent_frames:
        raise ValueError(f"stage2.context_frames={context_frames}: each latent frame holds {time_patch} "
                         f"frames, so context must be a multiple of {time_patch} below {frames} "
                         f"(e.g. {time_patch})")
    return context_frames // time_patch


def conditioning_drops(batch: int, label_dropout: float, context_dropout: float,
                       generator: torch.Generator | None = None, device=None) -> tuple[Tensor, Tensor]:
    """(drop_label, drop_context), bool (B,) each, from one uniform u per clip: u < label_dropout and
    u < context_dropout, so both are dropped together with probability min(label_dropout, context_dropout)."""
    u = distributed.rand((batch,), generator=generator, device=device)
    return u < label_dropout, u < context_dropout


class FrameConditionedBaseModel(BaseModel):
    """BaseModel on (C, t, h, w) latents whose first `context_latents` frames may be given."""

    def __init__(self, net, latent_shape: tuple[int, ...], num_classes: int, *, context_latents: int,
                 context_dropout: float = 0.1, **kwargs):
        super().__init__(net, latent_shape, num_classes, **kwargs)
        if len(self.latent_shape) != 4 or not 0 < context_latents < self.latent_shape[1]:
            raise ValueError(f"FrameConditionedBaseModel: latent {self.latent_shape} must be (C, t, h, w) "
                             f"with 0 < context_latents={context_latents} < t")
        self.context_latents, self.context_dropout = context_latents, context_dropout

    def _frame_mask(self, batch: int, use: Tensor, device) -> Tensor:
        """(B, t) bool: True on context frames of the examples where `use` (B,) is True."""
        frames = torch.arange(self.latent_shape[1], device=device) < self.context_latents
        return frames[None, :] & use[:, None]

    def batch_conditioning(self, batch: dict[str, Tensor]) -> dict:
        """The context encoding the latent store keeps for frame prediction (z_clean_context)."""
        return {"context_z_clean": batch["z_clean_context"].float()}

    def loss_terms(self, z_clean: Tensor, labels: Tensor, generator: torch.Generator | None = None,
                   z_logvar: Tensor | None = None, context_z_clean: Tensor | None = None) -> Stage2Terms:
        """Sigmoid-weighted eps-MSE on the generated frames only; context frames hold a z0 draw of
        `context_z_clean` (shaped like z_clean; its first context_latents frames are used). Without it
        the context is z_clean's own first frames (unit tests; training passes the store's)."""
        if z_logvar is not None and context_z_clean is not None:
            raise ValueError("FrameConditionedBaseModel: context_z_clean with a learned encoder variance "
                             "is not supported")
        if z_logvar is not None:
            z_clean = z_clean + torch.exp(0.5 * z_logvar) * distributed.randn(z_clean.shape, generator=generator,
                                                                        device=z_clean.device)
        b = z_clean.shape[0]
        if self.training:  # the guidance branch (null label, no context) is trained, not left to chance
            drop_label, drop_context = conditioning_drops(b, self.label_dropout, self.context_dropout, generator,
                                                          z_clean.device)
            labels = torch.where(drop_label, torch.full_like(labels, self.num_classes), labels)
        else:
            drop_context = torch.zeros(b, dtype=torch.bool, device=z_clean.device)
        mask = self._frame_mask(b, ~drop_context, z_clean.device)  # (B, t)
        where = mask[:, None, :, None, None]  # (B, 1, t, 1, 1)
        alpha0, sigma0 = alpha_sigma(torch.tensor(self.schedule.logsnr_max, device=z_clean.device))
        k = self.context_latents
        given = z_clean if context_z_clean is None else torch.cat([context_z_clean[:, :, :k], z_clean[:, :, k:]], 2)
        z0 = alpha0 * given + sigma0 * distributed.randn(z_clean.shape, generator=generator, device=z_clean.device)
        noised = add_noise(z_clean, self.schedule, generator)
        x_in = torch.where(where, z0, noised.x_t)  # (B, C, t, h, w)
        eps_hat = noised.eps_hat(self.net(x_in, noised.logsnr, labels, mask))
        eps_hat = torch.where(where, noised.eps, eps_hat)  # context frames cost nothing
        return Stage2Terms.of(noised, eps_hat, self.bias)

    @torch.no_grad()
    def sample_z0(self, labels: Tensor, steps: int, guidance: float = 0.0,
                  generator: torch.Generator | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  context_z0: Tensor | None = None, eta: float = 1.0,
                  guidance_interval: tuple[float, float] | None = None) -> Tensor:
        """z0 (B, C, t, h, w); with `context_z0` (B, C, k, h, w), k = context_latents, its frames are
        kept fixed and the rest continues them. `guidance` w guides label and context together, at the
        log-SNRs in `guidance_interval` (None: all);
        `eta` as in ancestral_sample (1 ancestral, 0 DDIM)."""
        b, k = labels.shape[0], self.context_latents
        if context_z0 is None:
            mask = self._frame_mask(b, torch.zeros(b, dtype=torch.bool, device=labels.device), labels.device)
            ctx = None
        else:
            if tuple(context_z0.shape) != (b, self.latent_shape[0], k, *self.latent_shape[2:]):
                raise ValueError(f"context_z0 is {tuple(context_z0.shape)}, expected "
                                 f"{(b, self.latent_shape[0], k, *self.latent_shape[2:])}")
            mask = self._frame_mask(b, torch.ones(b, dtype=torch.bool, device=labels.device), labels.device)
            ctx = context_z0.to(labels.device).float()
        null_labels = torch.full_like(labels, self.num_classes)
        no_ctx = torch.zeros_like(mask)

        def with_context(z: Tensor) -> Tensor:
            return z if ctx is None else torch.cat([ctx, z[:, :, k:]], dim=2)

        def without_context(z: Tensor, logsnr: Tensor) -> Tensor:
            """What a clip trained without context holds: its context frames at this level too, z_t ~ q(z_t | z0)."""
            if ctx is None:
                return z
            lam = expand_like(logsnr, ctx)
            alpha_t, sigma_t = alpha_sigma(lam)
            alpha0, _ = alpha_sigma(torch.tensor(self.schedule.logsnr_max, device=ctx.device))
            noise = torch.randn(ctx.shape, generator=generator, device=ctx.device)
            scale = sigma_t * (-torch.expm1(lam - self.schedule.logsnr_max)).clamp(min=0.0).sqrt()
            return torch.cat([alpha_t / alpha0 * ctx + scale * noise, z[:, :, k:]], dim=2)

        def denoise(z: Tensor, logsnr: Tensor) -> Tensor:
            if guidance == 0.0 or (guidance_interval is not None
                                   and not guidance_interval[0] <= float(logsnr[0]) <= guidance_interval[1]):
                return self.net(with_context(z), logsnr, labels, mask)
            v = self.net(torch.cat([with_context(z), without_context(z, logsnr)]), torch.cat([logsnr, logsnr]),
                         torch.cat([labels, null_labels]), torch.cat([mask, no_ctx]))
            v_cond, v_uncond = v.chunk(2)
            return (1.0 + guidance) * v_cond - guidance * v_uncond

        z0 = ancestral_sample(denoise, (b, *self.latent_shape), self.schedule, steps, final="noisy", eta=eta,
                              generator=generator, device=labels.device, progress=progress)
        return with_context(z0)


