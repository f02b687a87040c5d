"""Reading shards through fsspec (local or S3): an infinite training stream and exact one-pass reads.

Shards are read whole (one GET per shard), checked against the manifest's sha256 before any sample
is decoded, then parsed with `tarfile`; every image is validated against the manifest's
resolution/channels and every label against num_classes. Errors name the shard URL and sample key.
The tars are ordinary WebDataset shards, so `webdataset.WebDataset` reads them too.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ul_pipeline.data.manifest import read_manifest, ShardError, ShardManifest
from ul_pipeline.data.sample import expected_shape
from ul_pipeline.data.shards import iter_tar_samples, read_shard_bytes
from ul_pipeline.data.sources import Sample
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


def worker_slot(rank: int, world_size: int) -> tuple[int, int, int]:
    """(slot, slots, worker id): this (DDP rank, DataLoader worker)'s place among all readers."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * num_workers + worker, world_size * num_workers, worker


class ShardStream(IterableDataset):
    """Infinite training batches `(images uint8 (B, C, H, W), labels int64 (B,))` from resampled shards.

    Each (rank, worker) reader draws shards with replacement from its own share of the shards
    (all shards when there are fewer shards than readers) and mixes samples through a shuffle
    buffer of `shuffle_buffer` samples. Every reader emits only full batches and never ends, so
    all ranks get the same number of batches. The RNG derives from (seed, rank, worker,
    samples_seen): a resumed run passes its samples_seen and gets a fresh, reproducible stream.
    """

    def __init__(self, url: str, split: str = "train", batch_size: int = 64, *, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 2000, seed: int = 0, samples_seen: int = 0,
                 storage_options: StorageOptions = None):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        manifest = read_manifest(url, storage_options)
        self.shards = [(manifest.shard_url(r["shard"]), r["sha256"]) for r in manifest.shards(split).iter_rows(named=True)]
        if not self.shards:
            raise ShardError(f"{url}: split '{split}' has no shards")
        self.expect = _expect(manifest)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle_buffer, self.seed, self.samples_seen = shuffle_buffer, seed, samples_seen
        self.storage_options = storage_options

    def _samples(self, rng: np.random.Generator, shards: list[tuple[str, str]]) -> Iterator[Sample]:
        while True:
            shard_url, sha = shards[int(rng.integers(len(shards)))]
            data = read_shard_bytes(shard_url, self.storage_options, expect_sha256=sha)
            yield from iter_tar_samples(data, shard_url, expect=self.expect)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        slot, slots, worker = worker_slot(self.rank, self.world_size)
        shards = self.shards[slot::slots] if len(self.shards) >= slots else self.shards
        rng = np.random.default_rng([self.seed, self.rank, worker, self.samples_seen])
        buffer: list[tuple[np.ndarray, int]] = []
        images, labels = [], []
        for s in self._samples(rng, shards):
            item = (s.image, s.label)
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            if buffer:
                j = int(rng.integers(len(buffer)))
                item, buffer[j] = buffer[j], item
            images.append(item[0])
            labels.append(item[1])
            if len(images) == self.batch_size:
                yield torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)
                images, labels = [], []


def train_loader(url: str, split: str = "train", batch_size: int = 64, *, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, shuffle_buffer: int = 2000, seed: int = 0, samples_seen: int = 0,
                 storage_options: StorageOptions = None, **loader_kwargs) -> DataLoader:
    """A DataLoader over a ShardStream (batches are formed in the workers; batch_size=None here).

    `loader_kwargs` go to DataLoader (pin_memory, multiprocessing_context, ...). Forked workers
    are safe with S3: see the fork note in `ul_pipeline.data.storage`.
    """
    stream = ShardStream(url, split, batch_size, rank=rank, world_size=world_size, shuffle_buffer=shuffle_buffer,
                         seed=seed, samples_seen=samples_seen, storage_options=storage_options)
    return DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0,
                      **loader_kwargs)
