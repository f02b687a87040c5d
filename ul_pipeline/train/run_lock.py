"""One training run per run folder: an exclusive, non-blocking lock on `<run_dir>/.lock`.

Two runs of one folder (a schedule overlapping a manual run, a double click, a backfill) would
resume from the same checkpoint and overwrite each other's. The lock is an `fcntl.flock` held for
the whole run (`data.storage.exclusive_lock`); the kernel drops it when the process ends however it
ends, so a crashed run never leaves a stale lock. The file keeps the holder's pid and host for the
error message. flock works across processes on one machine and, on Linux, across NFS clients.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ul_pipeline.data.storage import ArtifactBusy, exclusive_lock

LOCK_NAME = ".lock"


class RunFolderBusy(ArtifactBusy):
    """Another process is training in this run folder."""


@contextlib.contextmanager
def run_folder_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock for the `with` block; RunFolderBusy at once when another process holds it."""
    run_dir = Path(run_dir)
    with exclusive_lock(run_dir / LOCK_NAME, f"run folder {run_dir}", RunFolderBusy, "training in it") as path:
        for stale in [*run_dir.glob(".last.pt.*.tmp"), *run_dir.glob(".metrics.jsonl.*.tmp")]:  # writes a crash cut short
            stale.unlink(missing_ok=True)
        yield path
