"""The streaming order as a pure function: every sample once per epoch over all readers, bounded windows, and
positions that follow from a sample count alone (what exact resume rests on)."""

from collections import Counter

import numpy as np
import pytest

from ul_pipeline.data.stream_plan import StreamPlan, make_pieces


def rows_of(plan: StreamPlan, epoch: int, reader: int) -> list[tuple[int, int]]:
    """(unit, row) of every sample a reader reads in an epoch, in its order (windows permuted)."""
    out = []
    for window in plan.windows(epoch, reader):
        rows = [(p.unit, r) for p in window.pieces for r in range(p.lo, p.hi)]
        out += [rows[i] for i in plan.window_order(window, reader)]
    return out


@pytest.mark.parametrize("sizes, readers", [([50] * 8, 4), ([7, 5, 3, 0, 9], 4), ([40, 40, 8], 6), ([100], 3)])
def test_every_sample_is_read_once_per_epoch_over_all_readers(sizes, readers):
    plan = StreamPlan(sizes, readers, seed=3, window_samples=20)
    everything = Counter((u, r) for u, n in enumerate(sizes) for r in range(n))
    n = sum(sizes)
    for epoch in range(3):
        seen = Counter(row for reader in range(readers) for row in rows_of(plan, epoch, reader))
        assert max(seen.values()) == 1 and set(seen) <= set(everything), epoch
        assert len(seen) == n - n % readers, epoch  # all but the N mod R at the end of the epoch's order
        assert all(plan.epoch_size(epoch, r) == len(rows_of(plan, epoch, r)) == n // readers for r in range(readers))
    orders = [rows_of(plan, e, 0) for e in range(3)]
    assert orders[0] != orders[1] != orders[2]  # a new order every epoch


def test_windows_are_whole_pieces_of_at_least_the_buffer_and_orders_follow_the_seed():
    plan = StreamPlan([30] * 10, 2, seed=0, window_samples=50)
    for reader in range(2):
        windows = plan.windows(0, reader)
        assert [w.size for w in windows] == [60, 60, 30]  # 5 shards of 30: two windows of two, the rest
        assert all(len(w.pieces) in (1, 2) for w in windows)
    same, other = StreamPlan([30] * 10, 2, 0, 50), StreamPlan([30] * 10, 2, 1, 50)
    assert rows_of(same, 0, 1) == rows_of(plan, 0, 1) != rows_of(other, 0, 1)


def test_locate_finds_the_sample_that_sequential_reading_reaches():
    plan = StreamPlan([13, 7, 22, 5, 9], 2, seed=5, window_samples=10)
    for reader in range(2):
        stream = []
        for epoch in range(4):
            for window in plan.windows(epoch, reader):
                stream += [(window, i) for i in range(window.size)]
        for n in [0, 1, 9, 10, 27, 28, 55, 56, len(stream) - 1]:
            window, offset = plan.locate(reader, n)
            assert (window, offset) == stream[n], n
            first = next(plan.windows_from(reader, n))
            assert first == (window, offset)


def test_fewer_units_than_readers_are_cut_into_row_ranges_in_proportion():
    pieces = make_pieces([10, 3], 8)  # 7 and 2 pieces: ceil(8 * 10 / 13), ceil(8 * 3 / 13)
    assert [(p.unit, p.lo, p.hi) for p in pieces] == [
        (0, 0, 1), (0, 1, 2), (0, 2, 4), (0, 4, 5), (0, 5, 7), (0, 7, 8), (0, 8, 10), (1, 0, 1), (1, 1, 3)]
    assert [(p.unit, p.lo, p.hi) for p in make_pieces([10, 3], 2)] == [(0, 0, 10), (1, 0, 3)]  # enough units
    assert len(make_pieces([1, 1, 1, 1], 4)) == 4 and len(make_pieces([4], 4)) == 4
    with pytest.raises(ValueError, match="holds 3 samples, fewer than the 4 readers"):
        make_pieces([3], 4, "shards at s3://x")
    with pytest.raises(ValueError, match="shards at s3://x holds no samples"):
        make_pieces([0, 0], 1, "shards at s3://x")


def test_permutations_are_numpy_seeded_and_independent_of_the_number_of_epochs_asked():
    plan = StreamPlan([8] * 4, 1, seed=11, window_samples=8)
    late = rows_of(plan, 2, 0)
    for epoch in range(2):
        rows_of(plan, epoch, 0)
    assert rows_of(plan, 2, 0) == late
    assert isinstance(plan.window_order(plan.windows(0, 0)[0], 0), np.ndarray)


class _Units:
    """Unit u holds samples 1000 u + [0, size) (a review's probe of uneven units)."""
    fields, where = ("value",), "toy units"

    def __init__(self, sizes):
        self.sizes = sizes

    def unit_sizes(self):
        return list(self.sizes)

    def load(self, pieces):
        return np.concatenate([np.arange(p.lo, p.hi) + 1000 * p.unit for p in pieces])

    def take(self, loaded, rows):
        return (loaded[rows],)


@pytest.mark.parametrize("sizes, workers, batch, epochs", [
    ([200, 200, 100], 2, 20, 2),  # the smoke train split (shard_size 200), compute.workers 2: 12.5 batches per epoch
    ([40] * 9, 2, 20, 1),  # 9 equal shards over 2 readers
    ([40] * 8, 3, 2, 3),  # 8 shards over 3 readers: 106 each, 2 of the 320 left out of each epoch
])
def test_uneven_units_still_give_every_reader_an_equal_epoch_and_each_sample_once(sizes, workers, batch, epochs):
    """Readers take turns batch by batch; with units dealt whole their epochs differed in length and a short
    reader ran into its next epoch early (a pass repeated some samples and skipped others)."""
    from ul_pipeline.distributed import World
    from ul_pipeline.train.streamed import StreamedBatches

    n, per_reader = sum(sizes), sum(sizes) // workers
    assert per_reader * epochs % batch == 0  # the readers end their last epoch on a batch boundary
    it = StreamedBatches(_Units(sizes), batch_size=batch, seed=0, shuffle_buffer=2000, workers=workers,
                         world=World(0, 1))(0)
    values = [v for _ in range(epochs * per_reader * workers // batch) for v in next(it)[0].tolist()]
    counts = Counter(values)
    assert max(counts.values()) <= epochs  # never more often than once per epoch
    if n % workers == 0:
        assert len(counts) == n and set(counts.values()) == {epochs}  # every sample once per epoch
    else:
        assert len(counts) > n - epochs * (n % workers)  # the few left out change with the epoch
