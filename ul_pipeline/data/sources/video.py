"""Video samples: the clip codec of the shards and two clip sources.

A clip is uint8 (C, T, H, W) in memory (the networks' layout: channels, then time, then space) and
a T x C x H x W `.npy` inside a shard (the layout of torchvision and most video tools). Sources:

- `MovingFashionMNIST`: deterministic, needs no download. Real Fashion-MNIST items (from the
  embedded dataset) move and bounce inside a larger frame; clip i is a pure function of
  (seed, i); its label is the class of its first item.
- `VideoFolderSource`: `url/<class>/**/<video>`, read with OpenCV (mp4, avi, mkv, webm, mov,
  whatever its FFmpeg backend decodes), resampled to `frames` frames at `fps` from the start of
  the video, each frame resized and center-cropped to `resolution`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from ul_pipeline.data.fashion_mnist import load_fashion_mnist
from ul_pipeline.data.codecs import fit_image, pil_to_array
from ul_pipeline.data.sample import Sample
from ul_pipeline.data.sources.listing import class_files
from ul_pipeline.data.storage import StorageOptions

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


def _bounce(pos: float, vel: float, lo: float, hi: float) -> tuple[float, float]:
    """One step of a point moving at `vel` inside [lo, hi], reflected at the walls."""
    pos += vel
    if pos < lo:
        pos, vel = 2 * lo - pos, -vel
    if pos > hi:
        pos, vel = 2 * hi - pos, -vel
    return pos, vel


class MovingFashionMNIST:
    """Clips of `items` Fashion-MNIST items bouncing in a `resolution`^2 frame (Moving-MNIST style).

    Items are resized to `item_size` (default resolution // 2), start at seeded positions with
    speeds of 1 to 3 pixels per frame in seeded directions, and are composed with a per-pixel max.
    Clip i draws its items and motion from `np.random.default_rng([seed, i])`: the same (seed, i)
    always gives the same clip, independent of which other clips are read.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, resolution: int = 32, channels: int = 1,
                 frames: int = 16, num_clips: Optional[int] = None, items: int = 2,
                 item_size: Optional[int] = None, seed: int = 0):
        if frames <= 0:
            raise ValueError(f"moving_fashion_mnist: data.frames must be > 0, got {frames}")
        self.item_size = item_size or resolution // 2
        if not 4 <= self.item_size <= resolution:
            raise ValueError(f"moving_fashion_mnist: item size {self.item_size} must fit in "
                             f"a {resolution}x{resolution} frame")
        self.images, self.labels = images, np.asarray(labels)  # (N, 28, 28) uint8, (N,)
        self.resolution, self.channels, self.frames = resolution, channels, frames
        self.num_clips = len(images) if num_clips is None else num_clips
        self.items, self.seed = items, seed

    @classmethod
    def from_fashion_mnist(cls, root: Optional[str] = None, storage_options: StorageOptions = None,
                           **kwargs) -> "MovingFashionMNIST":
        """Items from Fashion-MNIST train + test (70,000; the embedded Debian dataset by default)."""
        parts = [load_fashion_mnist(split, root, storage_options) for split in ("train", "test")]
        return cls(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), **kwargs)

    def __len__(self) -> int:
        return self.num_clips

    def _item(self, index: int) -> np.ndarray:  # (item_size, item_size) uint8
        img = Image.fromarray(self.images[index])
        return np.asarray(img.resize((self.item_size, self.item_size), Image.Resampling.BILINEAR))

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.num_clips:
            raise IndexError(f"moving_fashion_mnist: clip {i} outside [0, {self.num_clips})")
        rng = np.random.default_rng([self.seed, i])
        idx = rng.integers(len(self.images), size=self.items)
        span = float(self.resolution - self.item_size)
        pos = rng.uniform(0, span, size=(self.items, 2))  # (items, [y, x]) top-left corners
        angle = rng.uniform(0, 2 * np.pi, size=self.items)
        speed = rng.uniform(1.0, 3.0, size=self.items)
        vel = np.stack([speed * np.sin(angle), speed * np.cos(angle)], axis=1)
        sprites = [self._item(int(j)) for j in idx]
        clip = np.zeros((self.frames, self.resolution, self.resolution), dtype=np.uint8)
        for t in range(self.frames):
            for k, sprite in enumerate(sprites):
                y, x = (int(round(v)) for v in pos[k])
                window = clip[t, y:y + self.item_size, x:x + self.item_size]
                np.maximum(window, sprite, out=window)
                for a in range(2):
                    pos[k, a], vel[k, a] = _bounce(pos[k, a], vel[k, a], 0.0, span)
        clip = np.repeat(clip[None], self.channels, axis=0)  # (C, T, H, W)
        info = {"source": "moving_fashion_mnist", "items": [int(j) for j in idx],
                "item_labels": [int(self.labels[j]) for j in idx]}
        return Sample(f"mfmnist-{self.seed}-{i:06d}", clip, int(self.labels[idx[0]]), info)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


def read_video_frames(data: bytes, suffix: str, where: str) -> tuple[list[np.ndarray], float]:
    """(RGB frames uint8 (H, W, 3), native fps) of an encoded video held in memory, via OpenCV."""
    import cv2  # local: only video folders need it

    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:  # OpenCV reads paths only
        f.write(data)
        path = f.name
    try:
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise ValueError(f"{where}: cannot open the video")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        cap.release()
    finally:
        os.unlink(path)
    if not frames:
        raise ValueError(f"{where}: no decodable frames")
    return frames, fps if fps > 0 else 30.0


def resample_indices(num_frames: int, native_fps: float, fps: float, frames: int, where: str) -> list[int]:
    """Indices of `frames` frames at `fps` from the start of a `num_frames` video at `native_fps`."""
    idx = [int(np.floor(t * native_fps / fps + 1e-6)) for t in range(frames)]
    if idx[-1] >= num_frames:
        raise ValueError(f"{where}: {num_frames} frames at {native_fps:g} fps are too short for "
                         f"{frames} frames at data.fps={fps:g} (needs {frames / fps:.2f} s)")
    return idx


class VideoFolderSource:
    """`url/<class>/**/<video>` on any fsspec filesystem; classes sorted by name -> labels 0, 1, ..."""

    def __init__(self, url: str, *, resolution: int, channels: int, frames: int, fps: float,
                 storage_options: StorageOptions = None, fit: str = "crop"):
        if frames <= 0:
            raise ValueError(f"video folder {url}: data.frames must be > 0, got {frames}")
        self.url, self.resolution, self.channels, self.fit = url, resolution, channels, fit
        self.frames, self.fps = frames, fps
        self.fs, self.classes, self.items = class_files(url, storage_options, "video folder", VIDEO_EXTENSIONS)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        path, label, key = self.items[i]
        where = f"video folder {self.url}: {path}"
        raw, native_fps = read_video_frames(self.fs.cat_file(path), "." + path.rsplit(".", 1)[-1], where)
        idx = resample_indices(len(raw), native_fps, self.fps, self.frames, where)
        frames = [pil_to_array(fit_image(Image.fromarray(raw[j]), self.resolution, self.fit), self.channels)
                  for j in idx]  # each (C, H, W)
        clip = np.stack(frames, axis=1)  # (C, T, H, W)
        info = {"source": "video_folder", "path": path, "class_name": self.classes[label],
                "original_size": [int(raw[0].shape[0]), int(raw[0].shape[1])], "native_fps": native_fps}
        return Sample(key, clip, label, info)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))
