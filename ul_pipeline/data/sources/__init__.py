"""Data sources, one class each: they yield `Sample`s of uint8 images (C, H, W) or clips (C, T, H, W).

- `images.py`: Fashion-MNIST (the embedded default; `fashion_mnist_captions` adds templated captions) and an
  image folder (one sub-folder per class; captioned, and then possibly flat, when `captions.py` finds
  `foo.txt` beside `foo.png` or a `captions.csv` / `captions.jsonl` manifest);
- `emoji.py`: Twemoji with their names as captions (the npm package setup fetches), with its own split;
- `video.py`: Moving Fashion-MNIST clips and a video folder;
- `shards.py`: existing WebDataset shards.
A new source is a class with `__iter__` (and, if it can, `__len__`/`__getitem__`) plus a branch in
`build_source`. A captioned source sets `Sample.caption`; a source with its own held-out rule has
`split_indices(num_samples, seed)` (the shard writer then ignores data.val_size).
"""

from __future__ import annotations

from typing import Optional

from ul_pipeline.data.sample import Sample
from ul_pipeline.data.sources.emoji import EmojiSource
from ul_pipeline.data.sources.images import (ArraySource, ImageFolderSource, fashion_mnist_caption_source,
                                             fashion_mnist_source)
from ul_pipeline.data.sources.shards import ShardSource
from ul_pipeline.data.sources.video import MovingFashionMNIST, VideoFolderSource
from ul_pipeline.data.storage import StorageOptions

__all__ = ["ArraySource", "EmojiSource", "ImageFolderSource", "MovingFashionMNIST", "Sample", "ShardSource",
           "VideoFolderSource", "build_source", "fashion_mnist_caption_source", "fashion_mnist_source"]


def build_source(source: str, uri: Optional[str], *, resolution: int, channels: int,
                 storage_options: StorageOptions = None, frames: int = 0, fps: float = 8.0, seed: int = 0,
                 background: str = "white", unconditional: bool = False):
    """The source named by `DataConfig.source` ('fashion_mnist' | 'fashion_mnist_captions' | 'emoji' |
    'image_folder' | 'shards' | 'moving_fashion_mnist' | 'video_folder') at `uri`; the video ones yield
    (C, frames, H, W) clips; 'emoji' with uri None reads the tarball setup cached. `background` and
    `unconditional` (a flat folder without captions allowed) are the image folder's."""
    if source == "moving_fashion_mnist":
        return MovingFashionMNIST.from_fashion_mnist(uri, storage_options, resolution=resolution,
                                                           channels=channels, frames=frames, seed=seed)
    if source == "fashion_mnist":
        return fashion_mnist_source(uri, resolution=resolution, channels=channels, storage_options=storage_options)
    if source == "fashion_mnist_captions":
        return fashion_mnist_caption_source(uri, resolution=resolution, channels=channels,
                                            storage_options=storage_options)
    if source == "emoji":
        return EmojiSource(uri, resolution=resolution, channels=channels, storage_options=storage_options)
    if uri is None:
        raise ValueError(f"data.source '{source}' needs data.uri")
    if source == "image_folder":
        return ImageFolderSource(uri, resolution=resolution, channels=channels, storage_options=storage_options,
                                 background=background, unconditional=unconditional)
    if source == "video_folder":
        return VideoFolderSource(uri, resolution=resolution, channels=channels, frames=frames, fps=fps,
                                       storage_options=storage_options)
    if source == "shards":
        return ShardSource(uri, resolution=resolution, channels=channels, storage_options=storage_options)
    raise ValueError(f"unknown data.source '{source}' (known: fashion_mnist, fashion_mnist_captions, emoji, "
                     "image_folder, shards, moving_fashion_mnist, video_folder)")
