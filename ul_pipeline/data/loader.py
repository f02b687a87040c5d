"""Reading shards through fsspec (local or S3): exact one-pass reads and the units of the Stage-1 stream.

Shards are read whole (one GET per shard), checked against the manifest's sha256 before any sample
is decoded, then parsed with `tarfile`; every image is validated against the manifest's
resolution/channels and every label against num_classes. Errors name the shard URL and sample key.
The tars are ordinary WebDataset shards, so `webdataset.WebDataset` reads them too.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ul_pipeline.data.manifest import read_manifest, ShardError, ShardManifest
from ul_pipeline.data.sample import expected_shape
from ul_pipeline.data.shards import decode_sample, iter_tar_groups, iter_tar_samples, read_shard_bytes
from ul_pipeline.data.sources import Sample
from ul_pipeline.data.stream_plan import Piece
from ul_pipeline.data.storage import StorageOptions


def _expect(manifest: ShardManifest) -> tuple[int, int, int, int]:
    return manifest.resolution, manifest.channels, manifest.num_classes, manifest.frames


def iter_split(url: str, split: str, *, start: int = 0, storage_options: StorageOptions = None,
               manifest: Optional[ShardManifest] = None) -> Iterator[Sample]:
    """Every sample of `split` exactly once, in manifest order, from position `start` on.

    Yields `Sample(key, image uint8 (C, H, W) numpy, label, info)`. Shards wholly before `start`
    are not read. A shard whose sample count differs from the manifest raises ShardError.
    """
    manifest = manifest or read_manifest(url, storage_options)
    expect = _expect(manifest)
    for row in manifest.shards(split).iter_rows(named=True):
        first, count = row["first_index"], row["samples"]
        if first + count <= start:
            continue
        shard_url = manifest.shard_url(row["shard"])
        data = read_shard_bytes(shard_url, storage_options, expect_sha256=row["sha256"])
        skip = max(0, start - first)
        seen = skip
        for sample in iter_tar_samples(data, shard_url, start=skip, expect=expect):
            seen += 1
            yield sample
        if seen != count:
            raise ShardError(f"shard {shard_url}: {seen} samples, manifest says {count}")


def load_split_tensor(url: str, split: str, *, storage_options: StorageOptions = None, limit: Optional[int] = None
                      ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images uint8 (N, C, H, W) or clips (N, C, T, H, W), labels int64 (N,), keys) of a whole
    split, or of its first `limit` samples (only their shards are read), in manifest order."""
    manifest = read_manifest(url, storage_options)
    n = manifest.num_samples(split) if limit is None else min(limit, manifest.num_samples(split))
    images = np.empty((n, *expected_shape(manifest.resolution, manifest.channels, manifest.frames)),
                      dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    keys: list[str] = []
    for i, s in zip(range(n), iter_split(url, split, storage_options=storage_options, manifest=manifest)):
        images[i], labels[i] = s.image, s.label
        keys.append(s.key)
    return torch.from_numpy(images), torch.from_numpy(labels), keys


IMAGE_FIELDS = ("image",)  # what a Stage-1 batch is: uint8 images (B, C, H, W) or clips (B, C, T, H, W)


class ShardReader:
    """Stage-1 streaming units: the shards of a split, each read whole (one GET, sha256 checked against
    the manifest) and kept undecoded; a sample is decoded and validated when a batch takes it
    (ul_pipeline.data.streaming). Errors name the shard URL and the sample key."""

    fields = IMAGE_FIELDS

    def __init__(self, url: str, split: str = "train", *, storage_options: StorageOptions = None,
                 manifest: Optional[ShardManifest] = None):
        manifest = manifest or read_manifest(url, storage_options)
        rows = list(manifest.shards(split).iter_rows(named=True))
        if not rows:
            raise ShardError(f"{url}: split '{split}' has no shards")
        self.shards = [(manifest.shard_url(r["shard"]), r["sha256"], int(r["samples"])) for r in rows]
        self.expect, self.storage_options = _expect(manifest), storage_options
        self.where = f"split '{split}' of the shards at {url}"

    def unit_sizes(self) -> list[int]:
        return [n for _, _, n in self.shards]

    def load(self, pieces: Sequence[Piece]) -> list[tuple[str, str, dict[str, bytes]]]:
        """(shard URL, key, undecoded members) of every row of `pieces`, in order."""
        out = []
        for piece in pieces:
            shard_url, sha256, count = self.shards[piece.unit]
            groups = list(iter_tar_groups(read_shard_bytes(shard_url, self.storage_options, expect_sha256=sha256),
                                          shard_url))
            if len(groups) != count:
                raise ShardError(f"shard {shard_url}: {len(groups)} samples, manifest says {count}")
            out += [(shard_url, key, group) for key, group in groups[piece.lo:piece.hi]]
        return out

    def take(self, loaded: list[tuple[str, str, dict[str, bytes]]], rows: np.ndarray) -> tuple[np.ndarray]:
        """(images uint8 (len(rows), C, [T,] H, W),) of these rows, decoded and validated."""
        return (np.stack([decode_sample(key, group, url, self.expect).image for url, key, group in
                          (loaded[int(i)] for i in rows)]),)
