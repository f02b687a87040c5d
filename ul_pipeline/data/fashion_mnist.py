"""Fashion-MNIST from its IDX `.gz` files (Debian package `dataset-fashion-mnist` or any fsspec folder).

Files: `{train,t10k}-images-idx3-ubyte.gz` (uint8 (N, 28, 28)) and
`{train,t10k}-labels-idx1-ubyte.gz` (uint8 (N,), classes 0..9).
"""

from __future__ import annotations

import gzip
import zlib

import numpy as np

from ul_pipeline.data.storage import StorageOptions, join_url, url_to_fs

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
SPLITS = {"train": "train", "test": "t10k", "t10k": "t10k"}  # our split name -> file prefix
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class IdxFormatError(ValueError):
    """An IDX file is missing, truncated or not the expected array; the message names the file."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an uncompressed IDX file (uint8 payload only) into an array of its declared shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{name}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    if data[2] != 0x08:
        raise IdxFormatError(f"{name}: IDX element type 0x{data[2]:02x}, expected 0x08 (uint8)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{name}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise IdxFormatError(f"{name}: IDX payload has {len(data) - header} bytes, shape {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_idx_gz(url: str, storage_options: StorageOptions = None) -> np.ndarray:
    """Read one gzipped IDX file from a local path or fsspec URL."""
    fs, path = url_to_fs(url, storage_options)
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        raise IdxFormatError(f"{url}: file not found (`ul-pipeline fetch-assets fashion-mnist` installs Debian "
                             "package dataset-fashion-mnist; or point data.uri at a folder holding the IDX .gz "
                             "files)") from None
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise IdxFormatError(f"{url}: corrupt or truncated gzip ({e})") from None
    return parse_idx(data, url)


def load_fashion_mnist(split: str, root: str | None = None,
                       storage_options: StorageOptions = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of split 'train' or 'test' (= 't10k')."""
    if split not in SPLITS:
        raise ValueError(f"unknown Fashion-MNIST split '{split}' (known: train, test)")
    root = root or DEBIAN_ROOT
    prefix = SPLITS[split]
    images_url = join_url(root, f"{prefix}-images-idx3-ubyte.gz")
    labels_url = join_url(root, f"{prefix}-labels-idx1-ubyte.gz")
    images = read_idx_gz(images_url, storage_options)
    labels = read_idx_gz(labels_url, storage_options)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IdxFormatError(f"{images_url}: images shaped {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IdxFormatError(f"{labels_url}: {labels.shape} labels for {len(images)} images in {images_url}")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise IdxFormatError(f"{labels_url}: label {int(labels.max())} outside [0, {NUM_CLASSES})")
    return images, labels
