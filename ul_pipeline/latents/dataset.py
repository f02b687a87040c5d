"""Stage-2 data: infinite random batches of clean latents `(z_clean, labels)` from a latent store.

Returns `z_clean` exactly as stored (as float32); the training code draws `t` and noise at load
time (`z_t = alpha_t z_clean + sigma_t eps`) and nothing noisy is ever stored.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from ul_pipeline.latents.store import LatentStore, open_store
from ul_pipeline.data.loader import worker_slot
from ul_pipeline.data.storage import StorageOptions


class LatentBatches(IterableDataset):
    """Infinite batches `(z_clean float32 (B, C, h, w), labels int64 (B,))` drawn from a latent store.

    Each (rank, worker) reader takes its share of the store's blocks (every block when there are
    fewer blocks than readers). Per epoch it visits its blocks in random order, `blocks_per_pool`
    at a time (whole Zarr chunks, one read each), shuffles the pooled samples and cuts full
    batches, carrying the remainder into the next pool. `in_memory=True` reads the share once and
    keeps it in RAM (one pool). The RNG derives from (seed, rank, worker, samples_seen).
    The store must be complete; `expect_encoder_sha256` guards against another encoder's latents.
    """

    def __init__(self, store: LatentStore | str, batch_size: int, *, in_memory: bool = False,
                 blocks_per_pool: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1,
                 samples_seen: int = 0, storage_options: StorageOptions = None,
                 expect_encoder_sha256: Optional[str] = None):
        super().__init__()
        if isinstance(store, str):
            store = open_store(store, expect_encoder_sha256, storage_options=storage_options)
        elif expect_encoder_sha256 is not None:
            store = open_store(store.url, expect_encoder_sha256, storage_options=store.storage_options)
        if not store.meta["complete"]:
            raise ValueError(f"latent store {store.url} is incomplete")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.url, self.storage_options = store.url, store.storage_options
        self.num_blocks = store.num_blocks
        self._store: Optional[LatentStore] = store
        self._pid = os.getpid()
        self.batch_size, self.in_memory, self.blocks_per_pool = batch_size, in_memory, max(1, blocks_per_pool)
        self.seed, self.rank, self.world_size, self.samples_seen = seed, rank, world_size, samples_seen

    def __getstate__(self):  # spawned DataLoader workers reopen the store (fresh fsspec/zarr clients)
        return {**self.__dict__, "_store": None}

    def _open(self) -> LatentStore:
        if self._store is None or self._pid != os.getpid():  # forked workers too: the parent's
            self._store = open_store(self.url, storage_options=self.storage_options)  # S3 client is unusable
            self._pid = os.getpid()
        return self._store

    def _read(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        store = self._open()
        parts = [store.read_block(int(b)) for b in blocks]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        slot, slots, worker = worker_slot(self.rank, self.world_size)
        blocks = np.arange(self.num_blocks)
        if self.num_blocks >= slots:
            blocks = blocks[slot::slots]
        rng = np.random.default_rng([self.seed, self.rank, worker, self.samples_seen])
        cached = self._read(blocks) if self.in_memory else None
        carry_z = carry_y = None
        while True:
            order = rng.permutation(blocks)
            pools = [None] if cached is not None else [order[i:i + self.blocks_per_pool]
                                                       for i in range(0, len(order), self.blocks_per_pool)]
            for pool in pools:
                z, y = cached if cached is not None else self._read(pool)
                perm = rng.permutation(len(y))
                z, y = z[perm], y[perm]
                if carry_z is not None:
                    z, y = np.concatenate([carry_z, z]), np.concatenate([carry_y, y])
                full = len(y) - len(y) % self.batch_size
                for lo in range(0, full, self.batch_size):
                    yield (torch.from_numpy(z[lo:lo + self.batch_size]),  # (B, C, h, w)
                           torch.from_numpy(y[lo:lo + self.batch_size]))
                carry_z, carry_y = z[full:], y[full:]


def latent_loader(store: LatentStore | str, batch_size: int, *, num_workers: int = 0,
                  loader_kwargs: Optional[dict] = None, **kwargs) -> DataLoader:
    """A DataLoader over `LatentBatches(store, batch_size, **kwargs)` (batches are formed in the
    workers; batch_size=None here). `loader_kwargs` go to DataLoader (pin_memory, ...)."""
    return DataLoader(LatentBatches(store, batch_size, **kwargs), batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0, **(loader_kwargs or {}))
