"""The metrics history: one Parquet row per evaluation, readable by any tool, safe under concurrent writers.

The history is a folder (a Parquet dataset): each evaluation writes its own object
`<UTC time>-<pid>-<random>.parquet` atomically and never reads or rewrites another, so concurrent
evaluations, on a local disk or on S3, can neither lose nor corrupt a row, and no lock is needed.
Any tool reads the folder as one table (`polars.read_parquet("metrics_history/*.parquet")`,
`pandas.read_parquet("metrics_history")`); `read_history` does so in append order, with the rows
of a legacy single-file history (`metrics_history.parquet` beside the folder) first.
"""

from __future__ import annotations

import io
import os
import uuid
from datetime import datetime, timezone
from typing import Any

import polars as pl

from ul_pipeline.data.storage import StorageOptions, url_to_fs, write_bytes_atomic

LEGACY_SUFFIX = ".parquet"  # the single-file history of earlier versions: `<folder>.parquet`


def _row_name() -> str:
    """A name that sorts in append order and never collides between writers."""
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"{now}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"


def append_metrics_row(history_url: str, row: dict[str, Any], storage_options: StorageOptions = None) -> str:
    """Write one row as its own object in the history folder; returns the object's path."""
    fs, root = url_to_fs(history_url, storage_options)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    buf = io.BytesIO()
    pl.DataFrame([row]).write_parquet(buf)
    path = f"{root}/{_row_name()}"
    write_bytes_atomic(fs, path, buf.getvalue())
    return path


def read_history(history_url: str, storage_options: StorageOptions = None) -> pl.DataFrame:
    """Every row in append order (legacy single file first); empty when there is none yet."""
    fs, root = url_to_fs(history_url, storage_options)
    root = root.rstrip("/")
    frames = []
    legacy = root + LEGACY_SUFFIX
    if fs.isfile(legacy):
        with fs.open(legacy, "rb") as f:
            frames.append(pl.read_parquet(f))
    if fs.isdir(root):
        for path in sorted(p for p in fs.ls(root, detail=False) if p.endswith(".parquet")):
            with fs.open(path, "rb") as f:
                frames.append(pl.read_parquet(f))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
