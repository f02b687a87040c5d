"""One training run per run folder: an exclusive, non-blocking lock on `<run_dir>/.lock`.

Two runs of one folder (a schedule overlapping a manual run, a double click, a backfill) would
resume from the same checkpoint and overwrite each other's. The lock is an `fcntl.flock` held for
the whole run; the kernel drops it when the process ends however it ends, so a crashed run never
leaves a stale lock. The file keeps the holder's pid and host for the error message. flock works
across processes on one machine and, on Linux, across NFS clients (emulated with POSIX locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another process is training in this run folder."""


@contextlib.contextmanager
def run_folder_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock for the `with` block; RunFolderBusy at once when another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "an unknown process"
            raise RunFolderBusy(f"run folder {run_dir} is in use: {holder} is training in it (lock {path}). "
                                "Wait for that run to finish, or stop it; two runs of one folder would "
                                "overwrite each other's checkpoints.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # the next holder writes its own pid; the empty file may stay
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
