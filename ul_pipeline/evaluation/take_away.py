"""Samples as files to take to another tool: `sample --out DIR` writes, besides the grid `DIR/grid.png`,

- `DIR/sample_0000.png`, `sample_0001.png`, ...: one 8-bit PNG per sample (L or RGB; a clip: its frames
  side by side in one row), numbered in sampling order;
- `DIR/samples.npz`: `images` uint8 (N, H, W, C) (clips (N, T, H, W, C)), channels last as most
  tools read them; `labels` int64 (N,) for a class-conditional model (-1 for an unconditional one) or
  `prompts` (N,) str for a text model; `seeds` int64 (N,), the `--seed` of the run that drew them
  (sample i is the i-th of that seeded run: the same seed, count and settings give the same file).
Order: class models cycle the classes (sample i has label i mod num_classes) or repeat `--label`;
text models are prompt-major (the --num samples of the first prompt, then of the second, ...);
unconditional models have no order to state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image


def write_sample_files(folder: str | Path, images: torch.Tensor, *, seed: int, labels: torch.Tensor | None = None,
                       prompts: Sequence[str] | None = None) -> Path:
    """Write the per-sample PNGs and samples.npz of uint8 images (N, C, H, W) or clips (N, C, T, H, W) into
    `folder`; returns the .npz path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x = images.cpu().numpy()
    last = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # channels last: (N, H, W, C) or (N, T, H, W, C)
    for i, item in enumerate(last):
        picture = np.concatenate(list(item), axis=1) if item.ndim == 4 else item  # a clip: frames in one row
        Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(folder / f"sample_{i:04d}.png")
    arrays = {"images": last, "seeds": np.full(len(x), seed, dtype=np.int64)}
    if prompts is not None:
        arrays["prompts"] = np.asarray(list(prompts), dtype=str)
    else:
        arrays["labels"] = (np.full(len(x), -1, dtype=np.int64) if labels is None
                            else labels.cpu().numpy().astype(np.int64))
    path = folder / "samples.npz"
    np.savez(path, **arrays)
    return path
