"""Sample sources: Fashion-MNIST (plain or with templated captions), an image folder (one sub-folder per class;
captions from `captions.py` when it has them).

Every source yields `Sample(key, image, label, info)`: `image` is uint8 (C, H, W) already converted
to the configured channels and resolution, `label` an int, `info` a small JSON-able dict (source
name, original size, ...) that travels into the shard's `<key>.json`. Array-backed sources also
support `len()` and indexing, so sharding can permute them without holding decoded images twice.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
from PIL import Image

from ul_pipeline.data.codecs import convert_array, fit_image, pil_to_array
from ul_pipeline.data.fashion_mnist import load_fashion_mnist
from ul_pipeline.data.sample import Sample
from ul_pipeline.data.sources.captions import MANIFESTS, folder_captions
from ul_pipeline.data.sources.decoding import background_rgb, open_image
from ul_pipeline.data.sources.listing import class_files
from ul_pipeline.data.storage import StorageOptions, url_to_fs

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FASHION_MNIST_PAD_TO = 32  # 28x28 -> 32x32 with 2 background (0) pixels on each side
FASHION_MNIST_CAPTIONS = tuple(f"a photo of {c}" for c in (  # per class, in label order (fashion_mnist.CLASS_NAMES)
    "a t-shirt or top", "a pair of trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt", "a sneaker",
    "a bag", "an ankle boot"))


class ArraySource:
    """Samples from in-memory uint8 arrays (N, H, W) or (N, C, H, W), converted on access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, keys: list[str], *, resolution: int,
                 channels: int, source: str = "arrays", pad_to: Optional[int] = None, fit: str = "crop",
                 captions: Optional[list[str]] = None):
        if not (len(images) == len(labels) == len(keys) == len(keys if captions is None else captions)):
            raise ValueError(f"{source}: {len(images)} images, {len(labels)} labels, {len(keys)} keys"
                             + ("" if captions is None else f", {len(captions)} captions"))
        self.images, self.labels, self.keys, self.captions = images, np.asarray(labels), list(keys), captions
        self.resolution, self.channels, self.source = resolution, channels, source
        self.pad_to, self.fit = pad_to, fit

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        raw = self.images[i]
        image = convert_array(raw, self.resolution, self.channels, self.pad_to, self.fit)
        info = {"source": self.source, "original_size": [int(raw.shape[-2]), int(raw.shape[-1])]}
        return Sample(self.keys[i], image, int(self.labels[i]), info,
                      None if self.captions is None else self.captions[i])

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


def fashion_mnist_caption_source(root: Optional[str] = None, *, resolution: int = 32, channels: int = 1,
                                 storage_options: StorageOptions = None) -> ArraySource:
    """Fashion-MNIST (as `fashion_mnist_source`) with a templated caption per class ("a photo of an
    ankle boot"): the cheap text-to-image smoke case. Source name `fashion_mnist_captions`."""
    plain = fashion_mnist_source(root, resolution=resolution, channels=channels, storage_options=storage_options)
    return ArraySource(plain.images, plain.labels, plain.keys, resolution=resolution, channels=channels,
                       source="fashion_mnist_captions", pad_to=FASHION_MNIST_PAD_TO,
                       captions=[FASHION_MNIST_CAPTIONS[int(y)] for y in plain.labels])


class ImageFolderSource:
    """`url/<class>/**/<image>` on any fsspec filesystem; classes in natural order -> labels 0, 1, ...
    (listing rules: `listing.py`; how a file is decoded: `decoding.py`).

    Captioned when the folder holds captions (`captions.py`: `foo.txt` beside `foo.png`, or a
    `captions.csv` / `captions.jsonl` manifest); then a flat folder (no class sub-folders, label 0) is
    allowed too. `unconditional` (data.num_classes 0): every sample gets label 0, and a flat folder
    without captions is allowed. `class_names` is the label map (label i is class_names[i]).
    """

    def __init__(self, url: str, *, resolution: int, channels: int, storage_options: StorageOptions = None,
                 fit: str = "crop", extensions: tuple[str, ...] = IMAGE_EXTENSIONS, background: str = "white",
                 unconditional: bool = False):
        self.url, self.resolution, self.channels, self.fit = url, resolution, channels, fit
        self.background, self.unconditional = background_rgb(background), unconditional
        what = f"image folder {url}"
        self.fs, self.classes, self.items = class_files(url, storage_options, "image folder", extensions,
                                                        allow_flat=True)
        root = url_to_fs(url, storage_options)[1].rstrip("/")
        self.captions = folder_captions(self.fs, root, [path for path, *_ in self.items], what)
        if self.classes == [""] and self.captions is None and not unconditional:
            raise ValueError(f"{what}: no class sub-folders (a flat folder needs captions: foo.txt beside "
                             f"foo.png, or a {' / '.join(MANIFESTS)} manifest; or set data.num_classes: 0 "
                             "for an unconditional model)")

    @property
    def class_names(self) -> Optional[list[str]]:
        """The label map (label i is class_names[i]); None for a flat folder or an unconditional model."""
        return None if self.classes == [""] or self.unconditional else list(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        path, label, key = self.items[i]
        try:
            img, size = open_image(self.fs.cat_file(path), self.background)
            image = pil_to_array(fit_image(img, self.resolution, self.fit), self.channels)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"image folder {self.url}: cannot decode {path}: {e}") from None
        info = {"source": "image_folder", "path": path, "class_name": self.classes[label], "original_size": size}
        return Sample(key, image, 0 if self.unconditional else label, info,
                      None if self.captions is None else self.captions[i])

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


