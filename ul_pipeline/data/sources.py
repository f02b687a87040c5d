"""Sample sources: Fashion-MNIST, an image folder (one sub-folder per class) or existing shards.

Every source yields `Sample(key, image, label, info)`: `image` is uint8 (C, H, W) already converted
to the configured channels and resolution, `label` an int, `info` a small JSON-able dict (source
name, original size, ...) that travels into the shard's `<key>.json`. Array-backed sources also
support `len()` and indexing, so sharding can permute them without holding decoded images twice.
"""

from __future__ import annotations

import io
import re
from typing import Any, Iterator, NamedTuple, Optional

import numpy as np
from PIL import Image

from ul_pipeline.data.fashion_mnist import load_fashion_mnist
from ul_pipeline.data.storage import StorageOptions, join_url, url_to_fs

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FASHION_MNIST_PAD_TO = 32  # 28x28 -> 32x32 with 2 background (0) pixels on each side
_KEY_OK = re.compile(r"[^A-Za-z0-9_-]")


class Sample(NamedTuple):
    key: str  # unique, [A-Za-z0-9_-] only (WebDataset splits names at the first dot)
    image: np.ndarray  # uint8 (C, H, W)
    label: int
    info: dict[str, Any] = {}


def sanitize_key(name: str) -> str:
    """A WebDataset-safe key: path separators and dots become '_', other odd characters too."""
    return _KEY_OK.sub("_", name)


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


class ArraySource:
    """Samples from in-memory uint8 arrays (N, H, W) or (N, C, H, W), converted on access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, keys: list[str], *, resolution: int,
                 channels: int, source: str = "arrays", pad_to: Optional[int] = None, fit: str = "crop"):
        if not (len(images) == len(labels) == len(keys)):
            raise ValueError(f"{source}: {len(images)} images, {len(labels)} labels, {len(keys)} keys")
        self.images, self.labels, self.keys = images, np.asarray(labels), list(keys)
        self.resolution, self.channels, self.source = resolution, channels, source
        self.pad_to, self.fit = pad_to, fit

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        raw = self.images[i]
        image = convert_array(raw, self.resolution, self.channels, self.pad_to, self.fit)
        info = {"source": self.source, "original_size": [int(raw.shape[-2]), int(raw.shape[-1])]}
        return Sample(self.keys[i], image, int(self.labels[i]), info)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


def fashion_mnist_source(root: Optional[str] = None, *, resolution: int = 32, channels: int = 1,
                         storage_options: StorageOptions = None) -> ArraySource:
    """Fashion-MNIST train then test (70,000 samples), keys `fmnist-train-000123` / `fmnist-test-000123`,
    padded 28 -> 32 with background 0 (then resized if resolution != 32)."""
    parts = [(split, *load_fashion_mnist(split, root, storage_options)) for split in ("train", "test")]
    images = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    keys = [f"fmnist-{split}-{i:06d}" for split, imgs, _ in parts for i in range(len(imgs))]
    return ArraySource(images, labels, keys, resolution=resolution, channels=channels,
                       source="fashion_mnist", pad_to=FASHION_MNIST_PAD_TO)


def class_files(url: str, storage_options: StorageOptions, what: str,
                extensions: tuple[str, ...]) -> tuple[Any, list[str], list[tuple[str, int, str]]]:
    """(filesystem, class names sorted, [(path, label, key)]) of the files `url/<class>/**/<file>`.

    Labels follow the sorted class names; a key is `<class>-<path below the class, no extension>`,
    sanitized. Errors name `what` and the url: a missing folder, no class sub-folders, or two
    files that map to the same key.
    """
    fs, root = url_to_fs(url, storage_options)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise FileNotFoundError(f"{what} {url}: not found or not a directory")
    dirs = [d for d in fs.ls(root, detail=True) if d["type"] == "directory"]
    classes = sorted(d["name"].rstrip("/").rsplit("/", 1)[-1] for d in dirs)
    if not classes:
        raise ValueError(f"{what} {url}: no class sub-folders")
    items: list[tuple[str, int, str]] = []
    seen: dict[str, str] = {}
    for label, name in enumerate(classes):
        class_root = f"{root}/{name}"
        for path in sorted(p for p in fs.find(class_root) if p.lower().endswith(extensions)):
            key = sanitize_key(f"{name}-{path[len(class_root) + 1:].rsplit('.', 1)[0]}")
            if key in seen:
                raise ValueError(f"{what} {url}: files {seen[key]} and {path} map to the same key '{key}'")
            seen[key] = path
            items.append((path, label, key))
    return fs, classes, items


class ImageFolderSource:
    """`url/<class>/**/<image>` on any fsspec filesystem; classes sorted by name -> labels 0, 1, ..."""

    def __init__(self, url: str, *, resolution: int, channels: int, storage_options: StorageOptions = None,
                 fit: str = "crop", extensions: tuple[str, ...] = IMAGE_EXTENSIONS):
        self.url, self.resolution, self.channels, self.fit = url, resolution, channels, fit
        self.fs, self.classes, self.items = class_files(url, storage_options, "image folder", extensions)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        path, label, key = self.items[i]
        try:
            with Image.open(io.BytesIO(self.fs.cat_file(path))) as img:
                img.load()
                size = [img.height, img.width]
                image = pil_to_array(fit_image(img, self.resolution, self.fit), self.channels)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"image folder {self.url}: cannot decode {path} ({e})") from None
        info = {"source": "image_folder", "path": path, "class_name": self.classes[label], "original_size": size}
        return Sample(key, image, label, info)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


class ShardSource:
    """Samples of existing WebDataset shards: a folder with a `manifest.parquet` (all splits in
    manifest order), a folder of `*.tar` files (sorted), or one `.tar` URL. Iterable only."""

    def __init__(self, url: str, *, resolution: int, channels: int, storage_options: StorageOptions = None,
                 fit: str = "crop"):
        self.url, self.resolution, self.channels, self.fit = url, resolution, channels, fit
        self.storage_options = storage_options

    def shard_urls(self) -> list[str]:
        from ul_pipeline.data.shards import MANIFEST_NAME, read_manifest

        fs, root = url_to_fs(self.url, self.storage_options)
        if root.endswith(".tar"):
            return [self.url]
        if fs.exists(f"{root.rstrip('/')}/{MANIFEST_NAME}"):
            manifest = read_manifest(self.url, self.storage_options)
            return [join_url(self.url, s) for s in manifest.table["shard"].to_list()]
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.endswith(".tar"))
        if not names:
            raise FileNotFoundError(f"shard source {self.url}: no manifest.parquet and no .tar files")
        return [join_url(self.url, n) for n in names]

    def __iter__(self) -> Iterator[Sample]:
        from ul_pipeline.data.shards import iter_tar_samples, read_shard_bytes

        for shard_url in self.shard_urls():
            data = read_shard_bytes(shard_url, self.storage_options)
            for s in iter_tar_samples(data, shard_url):
                image = (s.image if s.image.ndim == 4  # a clip: re-sharded as stored, checked on write
                         else convert_array(s.image, self.resolution, self.channels, fit=self.fit))
                info = {"source": "shards", "shard": shard_url, "original_size": list(s.image.shape[1:])}
                yield Sample(s.key, image, s.label, info)


def build_source(source: str, uri: Optional[str], *, resolution: int, channels: int,
                 storage_options: StorageOptions = None, frames: int = 0, fps: float = 8.0, seed: int = 0):
    """The source named by `DataConfig.source` ('fashion_mnist' | 'image_folder' | 'shards' |
    'moving_fashion_mnist' | 'video_folder') at `uri`; the video ones yield (C, frames, H, W) clips."""
    from ul_pipeline.data import video  # local: video imports this module

    if source == "moving_fashion_mnist":
        return video.MovingFashionMNIST.from_fashion_mnist(uri, storage_options, resolution=resolution,
                                                           channels=channels, frames=frames, seed=seed)
    if source == "fashion_mnist":
        return fashion_mnist_source(uri, resolution=resolution, channels=channels, storage_options=storage_options)
    if uri is None:
        raise ValueError(f"data.source '{source}' needs data.uri")
    if source == "image_folder":
        return ImageFolderSource(uri, resolution=resolution, channels=channels, storage_options=storage_options)
    if source == "video_folder":
        return video.VideoFolderSource(uri, resolution=resolution, channels=channels, frames=frames, fps=fps,
                                       storage_options=storage_options)
    if source == "shards":
        return ShardSource(uri, resolution=resolution, channels=channels, storage_options=storage_options)
    raise ValueError(f"unknown data.source '{source}' (known: fashion_mnist, image_folder, shards, "
                     "moving_fashion_mnist, video_folder)")
