"""Small picture grids of a training run at a checkpoint, for TensorBoard: what people look at first.

Stage 1: eight fixed training images over their reconstructions (EMA weights, a few decoder steps).
Stage 2: eight samples, one per class in turn (text models: of the first eight captions), decoded by the Stage-1 decoder the store was encoded
with. Both draw from their own seeded generator, so training's random streams are untouched.
Images only: video runs get curves without pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from ul_pipeline.evaluation.metrics import to_float

COUNT = 8


def _grid(*rows: Tensor) -> Tensor:
    """Rows of images in [-1, 1] (B, C, H, W) -> one (C, H', W') picture in [0, 1]."""
    from torchvision.utils import make_grid

    x = torch.cat(rows).float().clamp(-1, 1)
    return make_grid((x + 1) / 2, nrow=len(rows[0]), padding=1, pad_value=1.0)


def reconstruction_picture(images: Tensor, device: torch.device, steps: int = 8) -> Optional[Callable[[Path], Tensor]]:
    """For Stage 1: `images` uint8 (N, C, H, W); None for clips."""
    if images.ndim != 4:
        return None
    x = to_float(images[:COUNT])

    def picture(checkpoint: Path) -> Tensor:
        from ul_pipeline.stage1.training import load_stage1

        model, _, _ = load_stage1(checkpoint, device=device)
        with torch.no_grad():
            recon = model.reconstruct(x.to(device), steps, generator=torch.Generator(device).manual_seed(0))
        return _grid(x, recon.cpu())

    return picture


def sample_picture(stage1_checkpoint: str | Path, num_classes: int, device: torch.device, latent_ndim: int,
                   steps: int = 16, decoder_steps: int = 8, text=None) -> Optional[Callable[[Path], Tensor]]:
    """For Stage 2: samples of the base model at a checkpoint; None for clips or without the Stage-1 checkpoint.
    A text model's samples are of `text` (a TextCondition: the first training captions) instead of classes."""
    if latent_ndim != 3 or not Path(stage1_checkpoint).is_file():
        return None

    decoder = {}  # the Stage-1 model, read once: it does not change while Stage 2 trains

    def picture(checkpoint: Path) -> Tensor:
        from ul_pipeline.stage1.training import load_stage1
        from ul_pipeline.stage2.training import load_base_model

        base, cfg, _ = load_base_model(checkpoint, device=device)
        if not decoder:
            decoder["ul"] = load_stage1(stage1_checkpoint, device=device)[0]
        ul = decoder["ul"]
        g = torch.Generator(device).manual_seed(0)
        labels = torch.arange(COUNT, device=device) % max(num_classes, 1)
        condition = labels if text is None else text[:COUNT].to(device)
        with torch.no_grad():
            z0 = base.sample_z0(condition, steps, float(cfg.sample.guidance), generator=g,
                                guidance_interval=cfg.sample.guidance_interval)
            x = ul.decode(z0, decoder_steps, generator=g)
        return _grid(x.cpu())

    return picture
