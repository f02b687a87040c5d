"""The notebook-sized Python API, re-exported from the package's top level (`import ul_pipeline as ul`).

Images are float tensors in [-1, 1], shaped (B, C, H, W) (video: (B, C, T, H, W)) in and out of
every model; `to_model_range` and `to_uint8` convert from and to uint8 pixels in [0, 255].

    model, cfg, meta = ul.load_stage1("runs/smoke/stage1/last.pt")     # the UL autoencoder
    z0 = model.encode(ul.to_model_range(uint8_images))                 # z_clean = E(x), deterministic
    x = model.decode(z0, steps=32)                                     # x ~ p(x | z0), in [-1, 1]
    store = ul.open_store("runs/smoke/latents.zarr")                   # the Zarr latent store
    base, base_cfg, base_meta = ul.load_base_model("runs/smoke/stage2/last.pt")
    x = ul.sample(model, base, labels=[0, 1, 2], steps=32, decoder_steps=32)

Everything here is a thin front on the library's own functions (`stage1.training.load_stage1`,
`stage2.training.load_base_model`, `latents.store.open_store`, the models' `encode`, `decode` and
`sample_z0`); the command line's `sample` draws images the same way.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ul_pipeline.data.loader import load_split_tensor
from ul_pipeline.evaluation.image import save_grid
from ul_pipeline.evaluation.metrics import psnr_uint8, to_float, to_uint8
from ul_pipeline.latents.store import LatentStore, open_store
from ul_pipeline.stage1.model import UnifiedLatents
from ul_pipeline.stage1.training import load_stage1
from ul_pipeline.stage2.model import BaseModel
from ul_pipeline.stage2.training import load_base_model

__all__ = ["BaseModel", "LatentStore", "UnifiedLatents", "load_base_model", "load_split_tensor", "load_stage1",
           "open_store", "psnr_uint8", "sample", "save_grid", "to_model_range", "to_uint8"]


def to_model_range(images: Tensor) -> Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the range every model reads and writes."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_model_range takes uint8 pixels, got {images.dtype}; float images must already be in [-1, 1]")
    return to_float(images)


@torch.no_grad()
def sample(autoencoder: UnifiedLatents, base: BaseModel, *, labels: Sequence[int] | Tensor | None = None,
           prompts: Sequence[str] | None = None, base_meta: dict | None = None, per_prompt: int = 1,
           steps: int = 32, decoder_steps: int = 32, guidance: float = 0.0, eta: float = 1.0,
           decoder_eta: float = 1.0, seed: int = 0, num_samples: int | None = None) -> Tensor:
    """New images in [-1, 1]: the base model draws z0 (one per label, or `per_prompt` per prompt), the
    autoencoder's decoder turns each into an image.

    A class-conditional base model takes `labels` (class indices); a text-conditioned one takes `prompts`
    and the `base_meta` that `load_base_model` returned (it names the text encoder the model was trained
    with; the MiniLM weights must be installed: `ul-pipeline fetch-assets text`). Seeded by `seed`.
    `guidance` is the classifier-free guidance weight (0: none), `eta` the samplers' noise (1: ancestral).
    An unconditional base model (data.num_classes 0) takes `num_samples` instead, with guidance 0.
    """
    from ul_pipeline.stage2.text_conditioned import TextConditionedBaseModel

    device = next(base.parameters()).device
    if isinstance(base, TextConditionedBaseModel):
        if not prompts or labels is not None:
            raise ValueError("this base model is text-conditioned: give prompts=[...] (and base_meta), not labels")
        from ul_pipeline.evaluation.prompts import encode_prompts, sample_prompts

        text = encode_prompts(list(prompts), base_meta or {}, device, base.cross)
        images = sample_prompts(autoencoder, base, text, per_prompt=per_prompt, steps=steps, decoder_steps=decoder_steps,
                                guidance=guidance, eta=eta, decoder_eta=decoder_eta, seed=seed, device=device)
        return to_float(images)
    if base.num_classes == 0:
        if prompts or labels is not None or not num_samples:
            raise ValueError("this base model is unconditional: give num_samples=N, not labels or prompts")
        labels = torch.zeros(num_samples, dtype=torch.long, device=device)
    if prompts or labels is None:
        raise ValueError("this base model is class-conditional: give labels=[...] (class indices), not prompts")
    if getattr(base, "context_latents", 0):
        raise ValueError("this base model continues clips from their first frames; it has no free samples to draw")
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if base.num_classes and labels.numel() and (labels.min() < 0 or labels.max() >= base.num_classes):
        raise ValueError(f"labels must be class indices in [0, {base.num_classes}), got {labels.tolist()}")
    g = torch.Generator(device=device).manual_seed(seed)
    z0 = base.sample_z0(labels, steps, guidance, generator=g, eta=eta)
    return autoencoder.decode(z0, decoder_steps, generator=g, eta=decoder_eta).clamp(-1, 1)
