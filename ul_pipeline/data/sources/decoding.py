"""How a file of a user's image folder becomes 8-bit pixels, before it is fitted (`codecs.fit_image`).

In this order:
1. EXIF orientation is applied (`ImageOps.exif_transpose`): a phone photo stored sideways with
   Orientation 6 or 8 comes out upright;
2. more than 8 bits per channel is scaled, not clipped: 16-bit integers (`I;16*`, and `I`, read as
   16-bit) map 0..65535 to 0..255 (divide by 257, round); floats (`F`) are taken as 0..1 when
   every value lies in [0, 1], else as 0..255, and clipped to that range;
3. transparency is composited on `background` (default white, as the emoji source does): RGBA,
   LA, and palette images with a transparent colour; the alpha channel is then gone;
4. every other mode (palette, CMYK, YCbCr, 1-bit, ...) is converted to RGB or L by Pillow.
The result is an L (grey) or RGB image; `pil_to_array` then makes the configured channels (grey -> RGB
repeats the grey; RGB -> grey is Pillow's ITU-R 601-2 luma). Only the image_folder source decodes
this way: the built-in sources (Fashion-MNIST, emoji, video) keep their own, unchanged bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def background_rgb(background: str) -> tuple[int, int, int]:
    """A colour name or #hex as (r, g, b); ValueError naming the key on anything else."""
    try:
        return ImageColor.getrgb(background)[:3]
    except ValueError:
        raise ValueError(f"data.background: unknown colour {background!r} (a name such as white or black, "
                         "or #rrggbb)") from None


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit or float single-channel image scaled to 8-bit L; any other image unchanged."""
    if img.mode in WIDE_INTEGER_MODES:
        arr = np.asarray(img, dtype=np.float64).clip(0, 65535) / 257.0
    elif img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        arr = arr.clip(0, 1) * 255.0 if arr.min() >= 0 and arr.max() <= 1 else arr.clip(0, 255)
    else:
        return img
    return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L")


def flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """An L or RGB image: transparency composited on `background`, other modes converted."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("RGBa", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("L" if img.mode == "1" else "RGB")


def open_image(data: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> tuple[Image.Image, list[int]]:
    """(L or RGB image, original [height, width] as stored) of an image file's bytes; ValueError on an empty
    or unreadable file."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            size = [img.height, img.width]
            upright = ImageOps.exif_transpose(img) or img
    except UnidentifiedImageError:
        raise ValueError(f"not an image Pillow can read ({len(data)} bytes)") from None
    return flatten(to_8bit(upright), background), size
