"""Which samples a streaming reader yields, as a pure function of (seed, epoch, reader), so a resume needs no saved buffer.

A data set is a list of units that are read whole: WebDataset shards (Stage 1) or blocks of the
latent store, one Zarr chunk each (Stage 2). When there are fewer units than readers, each unit is
cut into pieces (row ranges) so that every reader has work (a reader of a piece then reads its unit
whole and keeps the piece's rows: small data sets only). Every epoch the pieces are shuffled
from (seed, epoch) and laid end to end, and reader r of R (torchrun ranks x DataLoader workers)
takes the r-th of R equal contiguous runs of E = floor(N / R) samples of that sequence: a piece that
straddles two runs is split between them (its unit is then read by both, each keeping its rows).
So each sample is read by at most one reader once per epoch, and every reader's epoch has the same
length: readers that take turns batch by batch stay in step for ever. The N mod R < R samples at the
end of the sequence are left out of that epoch; which ones changes with every epoch's shuffle.
A reader walks its pieces in that order a
window at a time: whole pieces until the window holds at least `window_samples` samples (the
shuffle buffer; at least one piece), and permutes each window from (seed, epoch, reader, window).
Its stream is its epochs back to back. Where reader r stands after n samples follows from the piece
sizes alone (`locate`), so a resumed run reads only the window it resumes in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

PIECE_ORDER, WINDOW_ORDER = 1, 2  # domain tags of the two kinds of permutation
PLAN_VERSION = 2  # 2: equal contiguous runs per reader (1 dealt whole pieces round-robin: unequal epochs)


@dataclass(frozen=True)
class Piece:
    """Rows [lo, hi) of unit `unit` (a shard or a store block)."""

    unit: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo


def make_pieces(unit_sizes: Sequence[int], readers: int, where: str = "the data set") -> list[Piece]:
    """Whole units; when there are fewer units than readers, each unit cut into row ranges in proportion
    to its size, at least `readers` of them in all."""
    units = [(u, int(n)) for u, n in enumerate(unit_sizes) if n > 0]
    total = sum(n for _, n in units)
    if not units:
        raise ValueError(f"{where} holds no samples to stream")
    if total < readers:
        raise ValueError(f"{where} holds {total} samples, fewer than the {readers} readers (ranks x "
                         "compute.workers) that would stream it: use fewer workers or data.in_memory")
    pieces = []
    for u, n in units:
        k = 1 if len(units) >= readers else -(-readers * n // total)  # ceil(readers n / total) <= n
        bounds = [n * i // k for i in range(k + 1)]
        pieces += [Piece(u, bounds[i], bounds[i + 1]) for i in range(k)]
    return pieces


@dataclass(frozen=True)
class Window:
    """One shuffle window of a reader: its pieces and where it stands."""

    epoch: int
    index: int  # window number within the reader's epoch
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pieces)


class StreamPlan:
    """The order in which R readers stream a data set of units; see the module docstring."""

    def __init__(self, unit_sizes: Sequence[int], readers: int, seed: int, window_samples: int,
                 where: str = "the data set"):
        if readers < 1:
            raise ValueError(f"a stream needs at least one reader, got {readers}")
        self.pieces = make_pieces(unit_sizes, readers, where)
        self.readers, self.seed, self.window_samples = readers, int(seed), max(1, int(window_samples))
        self.sizes = np.array([p.size for p in self.pieces], dtype=np.int64)
        self.num_samples = int(self.sizes.sum())

    @property
    def fingerprint(self) -> str:
        """A digest of everything the order depends on but the reader count: the pieces (so the units and
        their sizes), the seed and the window. Two plans of one reader count with one fingerprint make one order."""
        text = repr((PLAN_VERSION, self.seed, self.window_samples, [(p.unit, p.lo, p.hi) for p in self.pieces]))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def reader_epoch_size(self) -> int:
        """E: how many samples every reader reads per epoch (the same for all, so turns stay in step)."""
        return self.num_samples // self.readers

    def epoch_pieces(self, epoch: int, reader: int) -> list[Piece]:
        """The pieces `reader` reads in `epoch`, in reading order: its run of E samples of the epoch's
        shuffled pieces laid end to end, the pieces at its two ends cut to the run."""
        order = np.random.default_rng([self.seed, PIECE_ORDER, epoch]).permutation(len(self.pieces))
        lo = reader * self.reader_epoch_size
        hi = lo + self.reader_epoch_size
        out, start = [], 0
        for i in order:
            piece = self.pieces[i]
            a, b = max(lo, start), min(hi, start + piece.size)
            if a < b:
                out.append(Piece(piece.unit, piece.lo + a - start, piece.lo + b - start))
            start += piece.size
            if start >= hi:
                break
        return out

    def epoch_size(self, epoch: int, reader: int) -> int:
        """How many samples `reader` reads in `epoch`: E for every reader and epoch."""
        return self.reader_epoch_size

    def windows(self, epoch: int, reader: int) -> list[Window]:
        """The reader's shuffle windows in `epoch`: whole pieces, at least `window_samples` samples each
        (the last may hold fewer)."""
        out, current, held = [], [], 0
        for piece in self.epoch_pieces(epoch, reader):
            current.append(piece)
            held += piece.size
            if held >= self.window_samples:
                out.append(Window(epoch, len(out), tuple(current)))
                current, held = [], 0
        if current:
            out.append(Window(epoch, len(out), tuple(current)))
        return out

    def window_order(self, window: Window, reader: int) -> np.ndarray:
        """The permutation of a window's rows (rows counted through its pieces in order)."""
        rng = np.random.default_rng([self.seed, WINDOW_ORDER, window.epoch, reader, window.index])
        return rng.permutation(window.size)

    def locate(self, reader: int, sample: int) -> tuple[Window, int]:
        """(window, offset in its permuted order) of the reader's `sample`-th sample since the start."""
        if sample < 0:
            raise ValueError(f"sample position {sample} < 0")
        epoch = 0
        while sample >= (size := self.epoch_size(epoch, reader)):  # whole epochs without building their windows
            sample -= size
            epoch += 1
        for window in self.windows(epoch, reader):
            if sample < window.size:
                return window, sample
            sample -= window.size
        raise AssertionError("unreachable: the epoch's windows hold epoch_size samples")

    def windows_from(self, reader: int, sample: int) -> Iterator[tuple[Window, int]]:
        """(window, offset to start from) for every window from the reader's `sample`-th sample on, forever."""
        window, offset = self.locate(reader, sample)
        epoch, first = window.epoch, window.index
        while True:
            for w in self.windows(epoch, reader)[first:]:
                yield w, offset
                offset = 0
            epoch, first = epoch + 1, 0
