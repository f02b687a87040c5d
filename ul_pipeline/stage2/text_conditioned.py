"""Stage 2 for text-to-image: a base model conditioned on a caption's text features (issue 21).

`stage2.text_conditioning` picks the variant: `pooled` (the sentence vector into the adaLN
embedding) or `cross` (that, plus cross-attention to the token states in every block;
ul_pipeline/nets/text_base.py). The captions' features come from the latent store, encoded once by
the frozen text encoder (ul_pipeline/latents/text_features.py) under `text_features/<sha256[:16]>/`;
a Stage-2 batch carries them under those paths (`text_fields`). For classifier-free guidance each
caption is replaced by the learned null caption with probability stage2.label_dropout (one uniform
per example), and sampling guides with the same `classifier_free_guidance` as the class-conditional
model: its "labels" are the rows of the caption batch, and the row past the end is the null caption.
The class label is not read.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ul_pipeline import distributed
from ul_pipeline.diffusion import ancestral_sample, classifier_free_guidance
from ul_pipeline.diffusion.forward import add_noise
from ul_pipeline.latents.store import LatentStore, LatentStoreError
from ul_pipeline.latents.text_features import TEXT_GROUP, open_text_features, text_group_name
from ul_pipeline.nets.text_base import TextCondition
from ul_pipeline.stage2.model import BaseModel, Stage2Terms

TEXT_MODES = ("none", "pooled", "cross")  # stage2.text_conditioning
TEXT_ARRAYS = {"pooled": ("pooled",), "cross": ("token_states", "mask", "pooled")}  # what each variant reads


def text_fields(mode: str, store: LatentStore, text_encoder_sha256: str) -> tuple[str, ...]:
    """The store's text-feature arrays a `mode` model reads, as batch fields (their paths in the store); a
    LatentStoreError naming the store and the group when it holds no complete features of this encoder."""
    if mode == "none":
        return ()
    try:
        open_text_features(store.url, text_encoder_sha256, storage_options=store.storage_options)
    except LatentStoreError as e:
        raise LatentStoreError(f"stage2.text_conditioning={mode} reads {text_group_name(text_encoder_sha256)} "
                               f"(the current text encoder's features): {e}. Extract the store from captioned "
                               "shards (data.source: emoji or fashion_mnist_captions)") from None
    return tuple(f"{text_group_name(text_encoder_sha256)}/{name}" for name in TEXT_ARRAYS[mode])


def text_condition_of(batch: dict[str, Tensor]) -> TextCondition:
    """The captions of a named Stage-2 batch (fields from `text_fields`)."""
    def field(name: str) -> Tensor | None:
        keys = [k for k in batch if k.startswith(TEXT_GROUP + "/") and k.endswith("/" + name)]
        return batch[keys[0]] if keys else None

    pooled, states, mask = field("pooled"), field("token_states"), field("mask")
    if pooled is None:
        raise ValueError(f"a text-conditioned base model needs the captions' text features; the batch holds "
                         f"{sorted(batch)}")
    return TextCondition(pooled.float(), None if states is None else states.float(),
                         None if mask is None else mask.bool())


class TextConditionedBaseModel(BaseModel):
    """BaseModel whose condition is a caption (`TextCondition`) instead of a class label."""

    def __init__(self, net, latent_shape: tuple[int, ...], **kwargs):
        super().__init__(net, latent_shape, 0, **kwargs)  # no classes: the label is not read

    @property
    def cross(self) -> bool:
        return bool(self.net.cross)

    def batch_conditioning(self, batch: dict[str, Tensor]) -> dict:
        return {"text": text_condition_of(batch)}

    def drop_captions(self, text: TextCondition, generator: torch.Generator | None = None) -> TextCondition:
        """Each caption replaced by the learned null caption with probability label_dropout (guidance)."""
        drop = distributed.rand((len(text),), generator=generator, device=text.pooled.device) < self.label_dropout
        return text.dropped(drop)

    def loss_terms(self, z_clean: Tensor, labels: Tensor, generator: torch.Generator | None = None,
                   z_logvar: Tensor | None = None, text: TextCondition | None = None) -> Stage2Terms:
        """BaseModel's sigmoid-weighted eps-MSE with the caption as the condition (`labels` is not read)."""
        if text is None:
            raise ValueError("TextConditionedBaseModel.loss_terms needs the captions (text=TextCondition)")
        z_clean = self.latent_draw(z_clean, z_logvar, generator)
        text = self.drop_captions(text.to(z_clean.device), generator) if self.training else text.to(z_clean.device)
        noised = add_noise(z_clean, self.schedule, generator)
        eps_hat = noised.eps_hat(self.net(noised.x_t, noised.logsnr, text))
        return Stage2Terms.of(noised, eps_hat, self.bias)

    @torch.no_grad()
    def sample_z0(self, text: TextCondition, steps: int, guidance: float = 0.0,  # type: ignore[override]
                  generator: torch.Generator | None = None,
                  progress: Callable[[int, int], None] | None = None, eta: float = 1.0,
                  guidance_interval: tuple[float, float] | None = None) -> Tensor:
        """z0 for each caption of `text`; `guidance` w: (1 + w) v(z | caption) - w v(z | null caption), at the
        log-SNRs in `guidance_interval` (None: all)."""
        device = text.pooled.device
        rows = torch.arange(len(text), device=device)  # row len(text) is the null caption

        def denoise(z: Tensor, logsnr: Tensor, index: Tensor) -> Tensor:
            return self.net(z, logsnr, text.rows_or_null(index))

        guided = classifier_free_guidance(denoise, rows, len(text), guidance, guidance_interval)
        z0 = ancestral_sample(guided, (len(text), *self.latent_shape), self.schedule, steps, final="noisy", eta=eta,
                              generator=generator, device=device, progress=progress)
        return self.to_z0(z0)
