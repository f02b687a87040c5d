"""In-memory batches whose order is a pure function of samples_seen (exact resume, any world size)."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ul_pipeline.train.batch_source import BatchSource
from ul_pipeline.train.seeding import derive_seed


class ShuffledBatches(BatchSource):
    """Batches from epoch-wise permutations seeded by (seed, epoch); call with samples_seen to resume."""

    kind = "in_memory"

    def __init__(self, *tensors: Tensor, batch_size: int, seed: int = 0, offset: int = 0,
                 count: int | None = None, fields: tuple[str, ...] | None = None):
        """`batch_size` is the global batch; this process takes rows [offset, offset + count) of each.
        `fields` names the tensors (default: tensor0, tensor1, ...)."""
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("ShuffledBatches needs tensors of equal, non-zero length")
        count = batch_size if count is None else count
        if not (0 <= offset and offset + count <= batch_size):
            raise ValueError(f"ShuffledBatches: share [{offset}, {offset + count}) is outside the batch of {batch_size}")
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.offset, self.count = offset, count
        self.n = len(tensors[0])
        self.fields = tuple(fields) if fields is not None else tuple(f"tensor{i}" for i in range(len(tensors)))
        if len(self.fields) != len(tensors):
            raise ValueError(f"ShuffledBatches: {len(tensors)} tensors, {len(self.fields)} field names {self.fields}")
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, 0, epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch cached
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> Tensor:
        """Dataset indices of global sample positions [start, start + count)."""
        pos = torch.arange(start, start + count)
        epochs, offsets = pos // self.n, pos % self.n
        return torch.cat([self._perm(int(e))[offsets[epochs == e]] for e in torch.unique(epochs)])

    def __call__(self, samples_seen: int = 0) -> Iterator[tuple[Tensor, ...]]:
        """Infinite batches (this process's share) from global sample position `samples_seen`."""
        pos = samples_seen
        while True:
            idx = self.indices(pos + self.offset, self.count)
            yield tuple(t[idx] for t in self.tensors)
            pos += self.batch_size
