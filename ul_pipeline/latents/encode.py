"""The Stage-1 encoder as extraction sees it: uint8 images in, the latent arrays a store keeps out."""

from __future__ import annotations

import torch

from ul_pipeline.data import augment
from ul_pipeline.evaluation import metrics


def encoder_fn(model, device: torch.device, batch_size: int = 256, hflip: bool = False):
    """uint8 images (B, C, H, W) -> {z_clean, z_logvar (a learned encoder variance), z_clean_hflip (`hflip`:
    the latents of the mirrored images)}, float32 on CPU."""

    @torch.no_grad()
    def posteriors(images: torch.Tensor) -> list:
        return [model.posterior(metrics.to_float(images[i:i + batch_size].to(device)))
                for i in range(0, len(images), batch_size)]

    @torch.no_grad()
    def encode(images: torch.Tensor) -> dict[str, torch.Tensor]:
        posts = posteriors(images)
        out = {"z_clean": torch.cat([p.z_clean.float().cpu() for p in posts])}
        if posts[0].logvar is not None:
            if hflip:
                raise ValueError("data.hflip with a learned encoder variance (stage1.encoder_noise) is not supported")
            out["z_logvar"] = torch.cat([p.logvar.float().cpu() for p in posts])
        if hflip:
            out["z_clean_hflip"] = torch.cat([p.z_clean.float().cpu() for p in posteriors(augment.hflip(images))])
        return out

    return encode
