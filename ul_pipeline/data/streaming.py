"""Streamed training batches from any data set read in units (shards, store blocks), in a StreamPlan's order.

A `UnitReader` says how a data set is read: its `fields` (the names of a batch's arrays), the size
of each unit, `load(pieces)` (a window's rows, held undecoded where decoding is costly) and
`take(loaded, rows)` (those rows as numpy arrays in `fields` order). `ReaderStream` is the
IterableDataset a DataLoader runs: each of a rank's K readers (DataLoader workers, or the training
process when there are none) makes every K-th batch of that rank, from the sample its plan position
says, so batch s of a run is the same batch whether the run started at 0 or resumed at s.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ul_pipeline.data.stream_plan import Piece, StreamPlan


class UnitReader(Protocol):
    """How one data set is streamed: see the module docstring."""

    fields: tuple[str, ...]
    where: str  # the data set, for messages

    def unit_sizes(self) -> list[int]: ...
    def load(self, pieces: Sequence[Piece]) -> Any: ...
    def take(self, loaded: Any, rows: np.ndarray) -> tuple[np.ndarray, ...]: ...


def reader_step(step: int, readers_per_rank: int) -> tuple[int, int]:
    """(reader within its rank, that reader's batch number) that makes the rank's batch of training step `step`."""
    return step % readers_per_rank, step // readers_per_rank


def batches_made(step: int, reader: int, readers_per_rank: int) -> int:
    """How many batches `reader` (within its rank) has made before training step `step`."""
    return max(0, -(-(step - reader) // readers_per_rank))


class ReaderStream(IterableDataset):
    """This rank's batches of `count` samples from training step `start_step` on, made by its readers in turn.

    Run it with `readers_per_rank` DataLoader workers (batch_size=None; the loader hands them out in
    turn: worker w makes steps start_step + w, + K, ...), or iterate it directly when K is 1.
    """

    def __init__(self, reader: UnitReader, plan: StreamPlan, *, rank: int, readers_per_rank: int, count: int,
                 start_step: int = 0):
        super().__init__()
        self.reader, self.plan, self.rank, self.k = reader, plan, rank, readers_per_rank
        self.count, self.start_step = count, start_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.k:
            raise RuntimeError(f"ReaderStream of {self.k} readers per rank run by {workers} DataLoader workers")
        local, number = reader_step(self.start_step + worker, self.k)
        yield from self.batches(self.rank * self.k + local, number * self.count)

    def batches(self, slot: int, start: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """Reader `slot`'s batches from its `start`-th sample on: windows in plan order, rows permuted."""
        pending: list[tuple[np.ndarray, ...]] = []
        held = 0
        for window, offset in self.plan.windows_from(slot, start):
            loaded = self.reader.load(window.pieces)
            order = self.plan.window_order(window, slot)
            pos = offset
            while pos < len(order):
                rows = order[pos:pos + self.count - held]
                pos += len(rows)
                pending.append(self.reader.take(loaded, rows))
                held += len(rows)
                if held == self.count:  # a batch may join the end of one window to the start of the next
                    yield tuple(torch.from_numpy(np.concatenate(cols) if len(cols) > 1 else cols[0])
                                for cols in zip(*pending))
                    pending, held = [], 0
            del loaded  # one window in memory at a time
