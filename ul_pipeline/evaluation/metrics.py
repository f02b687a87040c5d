"""Unit conversions and image metrics: nats -> bits per pixel / image / latent dimension, PSNR."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bits_per_image(latent_nats: Tensor | float) -> Tensor | float:
    """eq. 7: bits = L_z / ln 2 per image."""
    return latent_nats / math.log(2.0)


def bits_per_pixel(latent_nats: Tensor | float, image_shape: tuple[int, ...]) -> Tensor | float:
    """Bits per pixel = bits / (H * W) (spatial positions; channels are not counted)."""
    return bits_per_image(latent_nats) / math.prod(image_shape[1:])


def bits_per_latent_dim(latent_nats: Tensor | float, latent_shape: tuple[int, ...]) -> Tensor | float:
    """Bits per latent dimension = bits / (C * h * w)."""
    return bits_per_image(latent_nats) / math.prod(latent_shape)


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255] (rounded, clipped)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_float(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def psnr_uint8(reference: Tensor, reconstruction: Tensor) -> Tensor:
    """Per-image PSNR in dB on 8-bit images (B, ...) -> (B,); identical images give +inf."""
    ref, rec = reference.to(torch.float64), reconstruction.to(torch.float64)
    mse = ((ref - rec) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)
