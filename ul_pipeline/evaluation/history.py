"""The metrics history: one Parquet row per evaluation, appended in order, readable by any tool.

On a local filesystem the read-append-write holds an exclusive lock on `<history>.lock`, so
concurrent evaluations never lose a row.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import polars as pl

from ul_pipeline.data.storage import StorageOptions, is_local, url_to_fs, write_bytes_atomic


def read_history(history_url: str, storage_options: StorageOptions = None) -> pl.DataFrame:
    """The Parquet metrics history (one row per evaluation, appended in order); empty when there is none yet."""
    fs, path = url_to_fs(history_url, storage_options)
    if not fs.exists(path):
        return pl.DataFrame()
    with fs.open(path, "rb") as f:
        return pl.read_parquet(f)


def append_metrics_row(history_url: str, row: dict[str, Any], storage_options: StorageOptions = None) -> None:
    """Append one row to a Parquet metrics history (written atomically) that any tool can read.

    On a local filesystem the read-append-write holds an exclusive lock on `<history>.lock`, so
    evaluations finishing at the same time both keep their rows. Object stores have no locks: two
    appends to one S3 history at the same instant can still lose one row (the file stays valid).
    """
    fs, path = url_to_fs(history_url, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with _history_lock(fs, path):
        new = pl.DataFrame([row])
        if fs.exists(path):
            with fs.open(path, "rb") as f:
                new = pl.concat([pl.read_parquet(f), new], how="diagonal_relaxed")
        buf = io.BytesIO()
        new.write_parquet(buf)
        write_bytes_atomic(fs, path, buf.getvalue())


@contextlib.contextmanager
def _history_lock(fs, path: str):
    """An exclusive flock on `path + '.lock'` for local filesystems; nothing for object stores."""
    if not is_local(fs):
        yield
        return
    import fcntl

    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
