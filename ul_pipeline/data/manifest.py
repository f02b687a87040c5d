"""The shard manifest: one Parquet row per shard, written last; its sha256 identifies the dataset downstream.

`manifest.parquet` (Polars) has one row per shard: split, shard (the tar's name, see `shard_name`;
readers take it from here), first_index (position of the shard's first sample in its split),
samples, bytes, sha256, class_histogram (list of counts per class), plus dataset-level columns
repeated on every row (format_version, resolution, channels, num_classes, seed, val_size,
shard_size, sources, `frames`: 0 for images, the clip length for video, and `data_sha256` when the
shards were made from a config: the hash of its `data` section, `ul_pipeline.config.sweeps.data_sha256`;
older manifests lack it; `captions`: True only for a captioned set; `class_names`: the label map, label i
is class_names[i], only for a labelled image folder). A shard set without a manifest
is incomplete.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import polars as pl

from ul_pipeline.data.storage import StorageOptions, join_url, url_to_fs

FORMAT_VERSION = 1

MANIFEST_NAME = "manifest.parquet"

SPLITS = ("train", "val")

MANIFEST_COLUMNS = ("split", "shard", "first_index", "samples", "bytes", "sha256", "class_histogram",
                    "format_version", "resolution", "channels", "num_classes", "seed", "val_size",
                    "shard_size", "sources")

OPTIONAL_COLUMNS = {"frames": 0}  # added for video; a manifest without it holds images
DATA_SHA256_COLUMN = "data_sha256"  # written only for shards made from a config's data section
CAPTIONS_COLUMN = "captions"  # True, written only when every sample carries a caption (`<key>.txt`)
CLASS_NAMES_COLUMN = "class_names"  # list of class folder names by label, written only by a labelled image folder



class ShardError(ValueError):
    """A shard is missing, corrupt or holds a sample that breaks the manifest; names shard and key."""


def shard_name(split: str, index: int, tag: str | None = None) -> str:
    """`train-000000.tar`; with a tag (12 hex of the shard's sha256, for a rewrite) `train-000000.<tag>.tar`."""
    return f"{split}-{index:06d}.tar" if tag is None else f"{split}-{index:06d}.{tag}.tar"


@dataclass(frozen=True)
class ShardManifest:
    """The manifest of a shard set: its URL, table (one row per shard) and sha256 (dataset identity)."""

    url: str
    table: pl.DataFrame
    sha256: str

    def _scalar(self, column: str) -> int:
        return int(self.table[column][0])

    @property
    def resolution(self) -> int:
        return self._scalar("resolution")

    @property
    def channels(self) -> int:
        return self._scalar("channels")

    @property
    def frames(self) -> int:
        """Clip length in frames; 0 for a set of still images."""
        return self._scalar("frames") if "frames" in self.table.columns else 0

    @property
    def captions(self) -> bool:
        """True when every sample carries a caption (`<key>.txt`); older and uncaptioned sets lack the column."""
        return CAPTIONS_COLUMN in self.table.columns and bool(self.table[CAPTIONS_COLUMN][0])

    @property
    def num_classes(self) -> int:
        return self._scalar("num_classes")

    @property
    def class_names(self) -> list[str] | None:
        """The label map (label i is class_names[i]); None when the source had no class names (Fashion-MNIST)."""
        return list(self.table[CLASS_NAMES_COLUMN][0]) if CLASS_NAMES_COLUMN in self.table.columns else None

    @property
    def data_sha256(self) -> str | None:
        """The hash of the config `data` section that made these shards; None for an older manifest."""
        return str(self.table[DATA_SHA256_COLUMN][0]) if DATA_SHA256_COLUMN in self.table.columns else None

    def shards(self, split: str) -> pl.DataFrame:
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
        return self.table.filter(pl.col("split") == split).sort("first_index")

    def num_samples(self, split: str) -> int:
        return int(self.shards(split)["samples"].sum())

    def shard_url(self, shard: str) -> str:
        return join_url(self.url, shard)


def read_manifest(url: str, storage_options: StorageOptions = None) -> ShardManifest:
    """Read `url/manifest.parquet`; its absence means the shard set is incomplete or absent."""
    fs, root = url_to_fs(url, storage_options)
    manifest_url = join_url(url, MANIFEST_NAME)
    try:
        data = fs.cat_file(f"{root.rstrip('/')}/{MANIFEST_NAME}")
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest_url}: no manifest; the shard set is absent or incomplete") from None
    try:
        table = pl.read_parquet(io.BytesIO(data))
    except Exception as e:  # polars raises several error types for a bad file
        raise ShardError(f"{manifest_url}: unreadable manifest ({e})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing or table.height == 0:
        raise ShardError(f"{manifest_url}: not a shard manifest (missing columns {missing} or no rows)")
    if int(table["format_version"][0]) != FORMAT_VERSION:
        raise ShardError(f"{manifest_url}: format_version {table['format_version'][0]}, expected {FORMAT_VERSION}")
    return ShardManifest(url, table, hashlib.sha256(data).hexdigest())
