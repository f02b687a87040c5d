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
    for epoch in range(3):
        seen = Counter(row for reader in range(readers) for row in rows_of(plan, epoch, reader))
        assert seen == everything, epoch
        assert all(plan.epoch_size(epoch, r) == len(rows_of(plan, epoch, r)) > 0 for r in range(readers))
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
