"""ReaderStream: a rank's readers take turns, and a stream started at step s makes the batches an
uninterrupted stream makes from s on (in the training process and through DataLoader workers)."""

import gc

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ul_pipeline.data.stream_plan import StreamPlan
from ul_pipeline.data.streaming import ReaderStream, batches_made, reader_step


class ToyReader:
    """Units of consecutive integers: unit u holds rows u * 100 + [0, size); `loads` counts unit reads."""

    fields = ("value", "label")
    where = "toy data set"

    def __init__(self, sizes):
        self.sizes, self.loads = sizes, 0

    def unit_sizes(self):
        return list(self.sizes)

    def load(self, pieces):
        self.loads += len(pieces)
        return np.concatenate([np.arange(p.lo, p.hi) + 100 * p.unit for p in pieces])

    def take(self, loaded, rows):
        values = loaded[rows]
        return values.astype(np.float32), values % 7


def stream(reader, plan, start_step=0, k=1, rank=0, count=8):
    return ReaderStream(reader, plan, rank=rank, readers_per_rank=k, count=count, start_step=start_step)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_the_step_arithmetic_of_readers_taking_turns():
    assert [reader_step(s, 3) for s in range(7)] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
    assert [batches_made(7, r, 3) for r in range(3)] == [3, 2, 2]  # steps 0-6: reader 0 made 0, 3, 6
    assert batches_made(0, 2, 3) == 0 and batches_made(2, 2, 3) == 0 and batches_made(3, 2, 3) == 1


def test_a_stream_resumed_at_any_step_makes_the_uninterrupted_batches():
    reader = ToyReader([13, 20, 7, 16, 9])  # 65 samples: batches straddle windows and epochs
    plan = StreamPlan(reader.unit_sizes(), 1, seed=0, window_samples=15)
    full = take(iter(stream(reader, plan)), 30)
    for b in full:
        assert b[0].shape == (8,) and b[0].dtype == torch.float32 and b[1].dtype == torch.int64
        assert torch.equal(b[1], b[0].long() % 7)  # fields travel together
    first_epoch = torch.cat([b[0] for b in full])[:65].long()
    assert sorted(first_epoch.tolist()) == sorted(u * 100 + r for u, n in enumerate(reader.sizes) for r in range(n))
    for s in (1, 7, 8, 9, 17):
        resumed = take(iter(stream(reader, plan, start_step=s)), 30 - s)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[s:], resumed)), s
    reader.loads = 0
    take(iter(stream(reader, plan, start_step=17)), 1)
    assert reader.loads <= 2  # a resume reads the window it resumes in, not the way there


@pytest.mark.parametrize("start_step", [0, 3])
def test_dataloader_workers_take_turns_and_resume_alike(start_step):
    reader = ToyReader([10] * 8)
    plan = StreamPlan(reader.unit_sizes(), 2, seed=1, window_samples=20)  # one rank, two readers
    by_hand = stream(reader, plan, k=2)  # step s: reader s % 2, its batch s // 2
    in_process = [next(by_hand.batches(s % 2, (s // 2) * 8)) for s in range(start_step, start_step + 6)]
    loader = DataLoader(stream(reader, plan, start_step=start_step, k=2), batch_size=None, num_workers=2)
    got = take(iter(loader), 6)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(in_process, got))
    del loader
    gc.collect()


def test_a_stream_run_by_the_wrong_number_of_workers_is_refused():
    reader = ToyReader([10] * 4)
    loader = DataLoader(stream(reader, StreamPlan([10] * 4, 2, 0, 10), k=2), batch_size=None, num_workers=1)
    with pytest.raises(RuntimeError, match="2 readers per rank run by 1 DataLoader workers"):
        next(iter(loader))
