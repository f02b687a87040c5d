"""What every data source yields: a `Sample` (key, uint8 image or clip, label, info, caption) and its expected shape."""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional

import numpy as np

_KEY_OK = re.compile(r"[^A-Za-z0-9_-]")


class Sample(NamedTuple):
    key: str  # unique, [A-Za-z0-9_-] only (WebDataset splits names at the first dot)
    image: np.ndarray  # uint8 (C, H, W)
    label: int
    info: dict[str, Any] = {}
    caption: Optional[str] = None  # a text description (captioned sources only); the shard's `<key>.txt`


def sanitize_key(name: str) -> str:
    """A WebDataset-safe key: path separators and dots become '_', other odd characters too."""
    return _KEY_OK.sub("_", name)


def expected_shape(resolution: int, channels: int, frames: int = 0) -> tuple[int, ...]:
    """(C, H, W) of an image, or (C, T, H, W) of a clip when frames > 0."""
    return (channels, *((frames,) if frames else ()), resolution, resolution)
