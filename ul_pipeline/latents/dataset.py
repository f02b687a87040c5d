"""Stage-2 data: what a Stage-2 batch is (`sample_arrays`) and the store's blocks as streaming units (`BlockReader`).

A batch carries every per-sample array of the latent store: `z_clean`, `labels`, then the others
by name (`z_clean_context`, `z_clean_hflip`, `z_logvar`, and whatever conditioning a store holds),
so nothing the store holds is dropped on the way to the loss (ul_pipeline.stage2.batches leaves
out only what the configured model does not read). Latents come as float32, integer arrays as int64,
exactly as stored otherwise: the training code draws `t` and noise at load time
(`z_t = alpha_t z_clean + sigma_t eps`) and nothing noisy is ever stored.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ul_pipeline.data.stream_plan import Piece
from ul_pipeline.latents.store import LatentStore, LatentStoreError, open_store

NOT_PER_SAMPLE = ("keys", "blocks_done")  # the store's bookkeeping arrays: never part of a batch


def sample_arrays(store: LatentStore) -> tuple[str, ...]:
    """The names of a Stage-2 batch's arrays, in order: z_clean, labels, then the store's other per-sample arrays."""
    others = sorted(name for name in store.group.array_keys()
                    if name not in ("z_clean", "labels", *NOT_PER_SAMPLE)
                    and store.group[name].shape[:1] == (store.num_samples,))
    return ("z_clean", "labels", *others)


def read_rows(store: LatentStore, name: str, rows: slice = slice(None)) -> np.ndarray:
    """Rows of a store array as training reads them: floating point as float32, integers as int64."""
    a = store.group[name]
    dtype = np.float32 if np.issubdtype(a.dtype, np.floating) else np.int64
    try:
        return np.asarray(a[rows], dtype=dtype)
    except Exception as e:  # a damaged chunk: the codec's own error names neither the store nor the rows
        span = "" if rows == slice(None) else f" rows [{rows.start}, {rows.stop})"
        raise LatentStoreError(f"latent store {store.url}: array {name}{span} is unreadable ({type(e).__name__}: "
                               f"{e}), a damaged chunk: re-encode it (delete the store)") from e


def check_rows(url: str, arrays: dict[str, np.ndarray], num_classes: Optional[int], where: str = "") -> None:
    """A complete store has finite latents (every float array, counted per array) and labels in
    [0, num_classes); else a LatentStoreError (`where`, e.g. " in block 3", says which rows)."""
    bad = sum(int((~np.isfinite(a)).reshape(len(a), -1).any(1).sum())
              for a in arrays.values() if np.issubdtype(a.dtype, np.floating))
    if num_classes is not None:
        labels = arrays["labels"]
        bad += int(((labels < 0) | (labels >= max(num_classes, 1))).sum())  # 0 classes: unconditional, label 0
    if bad:
        raise LatentStoreError(f"latent store {url} says complete but {bad} samples{where} have non-finite latents "
                               "or labels out of range (a missing or damaged chunk): re-encode it (delete the store)")


class BlockReader:
    """Stage-2 streaming units: the blocks of a complete latent store (one Zarr chunk per array each).

    Spawned or forked DataLoader workers reopen the store (fresh fsspec/zarr clients: the parent's
    S3 client is unusable in a child). `num_classes` checks every label read; `fields` (default:
    `sample_arrays(store)`) are the arrays a batch carries.
    """

    def __init__(self, store: LatentStore, num_classes: Optional[int] = None, fields: Optional[Sequence[str]] = None):
        if not store.meta["complete"]:
            raise LatentStoreError(f"latent store {store.url} is incomplete")
        self.url, self.storage_options, self.num_classes = store.url, store.storage_options, num_classes
        self.fields = tuple(fields) if fields is not None else sample_arrays(store)
        self.slices = [store.block_slice(b) for b in range(store.num_blocks)]
        self.where = f"latent store {store.url}"
        self._store: Optional[LatentStore] = store
        self._pid = os.getpid()

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    def _open(self) -> LatentStore:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.url, storage_options=self.storage_options)
            self._pid = os.getpid()
        return self._store

    def unit_sizes(self) -> list[int]:
        return [s.stop - s.start for s in self.slices]

    def load(self, pieces: Sequence[Piece]) -> tuple[np.ndarray, ...]:
        """Every array of `fields` for the rows of `pieces`, in order."""
        store, parts = self._open(), []
        for piece in pieces:
            first = self.slices[piece.unit].start
            rows = slice(first + piece.lo, first + piece.hi)
            arrays = tuple(read_rows(store, name, rows) for name in self.fields)
            check_rows(self.url, dict(zip(self.fields, arrays)), self.num_classes, f" in block {piece.unit}")
            parts.append(arrays)
        return tuple(np.concatenate(cols) if len(cols) > 1 else cols[0] for cols in zip(*parts))

    def take(self, loaded: tuple[np.ndarray, ...], rows: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(a[rows] for a in loaded)
