"""Pixels in and out: PNG and `.npy` clip bytes, and fitting any image to the configured size and channels.

In memory an image is uint8 (C, H, W) and a clip uint8 (C, T, H, W), the networks' layout; on disk a
clip's `.npy` is T x C x H x W, the layout of torchvision and most video tools. Only `encode_clip` /
`decode_clip` transpose.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
from PIL import Image


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (1|3, H, W) -> 8-bit PNG bytes (L or RGB)."""
    pil = Image.fromarray(image[0]) if image.shape[0] == 1 else Image.fromarray(image.transpose(1, 2, 0))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes -> uint8 (C, H, W) with C = 1 for L images, 3 for RGB (others converted to RGB)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def encode_clip(clip: np.ndarray) -> bytes:
    """uint8 (C, T, H, W) -> `.npy` bytes of the T x C x H x W array."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(clip.transpose(1, 0, 2, 3)), allow_pickle=False)
    return buf.getvalue()


def decode_clip(data: bytes) -> np.ndarray:
    """`.npy` bytes of a uint8 T x C x H x W clip -> uint8 (C, T, H, W); ValueError if it is not one."""
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"expected a uint8 T x C x H x W array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr.transpose(1, 0, 2, 3))


def _pad_center(img: np.ndarray, size: int) -> np.ndarray:  # (C, H, W) -> (C, size, size)
    c, h, w = img.shape
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((c, size, size), dtype=np.uint8)
    out[:, top:top + h, left:left + w] = img
    return out


def fit_image(img: Image.Image, resolution: int, fit: str = "crop") -> Image.Image:
    """Resize (antialiased bicubic) and center-crop ('crop': shorter side -> resolution) or
    center-pad with 0 ('pad': longer side -> resolution) to resolution x resolution."""
    w, h = img.size
    if (w, h) == (resolution, resolution):
        return img
    if fit not in ("crop", "pad"):
        raise ValueError(f"fit must be 'crop' or 'pad', got '{fit}'")
    scale = resolution / (min(w, h) if fit == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    if fit == "crop":
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        return img.crop((left, top, left + resolution, top + resolution))
    canvas = Image.new(img.mode, (resolution, resolution), 0)
    canvas.paste(img, ((resolution - nw) // 2, (resolution - nh) // 2))
    return canvas


def pil_to_array(img: Image.Image, channels: int) -> np.ndarray:
    """PIL image -> uint8 (channels, H, W), converting mode to L (1) or RGB (3)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def convert_array(img: np.ndarray, resolution: int, channels: int, pad_to: Optional[int] = None,
                  fit: str = "crop") -> np.ndarray:
    """uint8 (H, W) or (C, H, W) -> uint8 (channels, resolution, resolution).

    `pad_to`: first center-pad with 0 to pad_to x pad_to (Fashion-MNIST 28 -> 32); then resize
    to `resolution` if it still differs.
    """
    if img.ndim == 2:
        img = img[None]
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected uint8 (H, W) or (1|3, H, W), got {img.dtype} {img.shape}")
    if pad_to is not None:
        if max(img.shape[1:]) > pad_to:
            raise ValueError(f"image {img.shape[1:]} larger than pad_to={pad_to}")
        img = _pad_center(img, pad_to)
    if img.shape[1:] == (resolution, resolution) and img.shape[0] == channels:
        return img
    if img.shape[1:] == (resolution, resolution) and img.shape[0] == 1:  # gray -> RGB
        return np.repeat(img, channels, axis=0)
    pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
    return pil_to_array(fit_image(pil, resolution, fit), channels)
