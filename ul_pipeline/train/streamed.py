"""Streamed batches (data.in_memory: false): a data set read in units, in a StreamPlan's order, split over ranks and workers.

Memory holds one shuffle window per reader (data.shuffle_buffer samples in whole shards or blocks),
never the data set. Each rank has K = max(1, compute.workers) readers: DataLoader workers, or the
training process itself when compute.workers is 0. A rank's batch of training step s is made by its
reader s mod K, from a position that follows from s alone (ul_pipeline.data.streaming), so a run
killed and re-run makes the same batches as one never interrupted. The order depends on the layout
(ranks x readers per rank); the checkpoint records it with every reader's position, and a resume
on another layout or another data set is refused. (The in-memory path has no such limit.)
"""

from __future__ import annotations

from typing import Iterator, Optional

from torch import Tensor
from torch.utils.data import DataLoader

from ul_pipeline import distributed
from ul_pipeline.data.stream_plan import StreamPlan
from ul_pipeline.data.streaming import ReaderStream, UnitReader, batches_made
from ul_pipeline.train.batch_source import BatchSource
from ul_pipeline.train.checkpoint import CheckpointError


class StreamedBatches(BatchSource):
    """This rank's share of every global batch, streamed from `reader`; see the module docstring."""

    kind = "stream"

    def __init__(self, reader: UnitReader, *, batch_size: int, seed: int, shuffle_buffer: int, workers: int = 0,
                 world: Optional[distributed.World] = None):
        if workers < 0:
            raise ValueError(f"compute.workers must be >= 0, got {workers}")
        w = world or distributed.world()
        _, self.count = distributed.share(batch_size, w)
        self.reader, self.fields, self.batch_size = reader, tuple(reader.fields), batch_size
        self.rank, self.ranks, self.workers, self.k = w.rank, w.size, workers, max(1, workers)
        self.plan = StreamPlan(reader.unit_sizes(), self.ranks * self.k, seed, shuffle_buffer, reader.where)

    def _step(self, samples_seen: int) -> int:
        if samples_seen % self.batch_size:
            raise ValueError(f"samples_seen {samples_seen} is not a whole number of global batches of {self.batch_size}")
        return samples_seen // self.batch_size

    def __call__(self, samples_seen: int = 0) -> Iterator[tuple[Tensor, ...]]:
        stream = ReaderStream(self.reader, self.plan, rank=self.rank, readers_per_rank=self.k, count=self.count,
                              start_step=self._step(samples_seen))
        if self.workers == 0:
            return iter(stream)
        return iter(DataLoader(stream, batch_size=None, num_workers=self.workers))  # workers take turns in order

    def position(self, samples_seen: int) -> dict:
        """The layout and, per reader (rank-major), [epoch, window, offset] of its next sample."""
        step, readers = self._step(samples_seen), []
        for slot in range(self.ranks * self.k):
            window, offset = self.plan.locate(slot, batches_made(step, slot % self.k, self.k) * self.count)
            readers.append([window.epoch, window.index, offset])
        return {"source": self.kind, "samples_seen": int(samples_seen), "ranks": self.ranks, "workers": self.workers,
                "plan": self.plan.fingerprint, "readers": readers}

    def check_position(self, saved: Optional[dict], where: str) -> None:
        if not saved or saved.get("source") != self.kind:
            raise CheckpointError(f"cannot resume {where} with streamed batches: it holds no streaming loader "
                                  f"position (loader: {saved!r})")
        missing = [k for k in ("samples_seen", "ranks", "workers", "readers") if k not in saved]
        if missing:
            raise CheckpointError(f"cannot resume {where}: its streaming loader position lacks {', '.join(missing)} "
                                  f"(loader: {saved!r}); the file was damaged or written by other code")
        here = self.position(int(saved["samples_seen"]))
        if (saved["ranks"], saved["workers"]) != (here["ranks"], here["workers"]):
            raise CheckpointError(
                f"cannot resume {where} exactly: its streamed batches came from {saved['ranks']} rank(s) x "
                f"compute.workers={saved['workers']}, this run has {here['ranks']} x {here['workers']}. Resume with "
                "the same number of processes and compute.workers (the order of a stream depends on both)")
        if "plan" in saved and saved["plan"] != here["plan"]:  # checkpoints written before it had no "plan"
            raise CheckpointError(f"cannot resume {where} exactly: its streamed batches followed another plan (plan "
                                  f"{saved['plan']}, this run's is {here['plan']}): the units of {self.reader.where} "
                                  "or their sizes changed since (e.g. a latent store encoded again with another "
                                  "encode.block_size, or shards written again). Resume on the data set it was "
                                  "trained on, or use another run directory")
        if saved["readers"] != here["readers"]:
            raise CheckpointError(f"cannot resume {where} exactly: the streaming readers' positions it saved "
                                  f"differ from those of this data set and plan (saved {saved['readers'][:4]}, "
                                  f"here {here['readers'][:4]}): the data set's units changed")
