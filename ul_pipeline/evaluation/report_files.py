"""Writing a report folder as one set: the new files are made elsewhere, then swapped in together.

A report is several files that must agree (tables, JSON, plots). Written in place, a run that fails
or is killed half-way leaves the new tables beside the last run's plots, each file looking complete.
`staged_report(out_dir)` hands out a fresh temporary folder to write into; only when the body ends
without an error are its files moved into out_dir: each is first copied beside its destination under
a hidden name, then all are renamed over the old ones (a rename is atomic), all under an exclusive
lock on out_dir, so two runs writing one folder at once leave one run's whole set, not a mix. Files
of out_dir the report does not write (notes, other scripts' outputs) are left alone. A run killed
while computing leaves out_dir untouched; only a kill in the last milliseconds can leave hidden
`.*.tmp-<pid>` files (never a half-written report file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the renames alone still keep every file whole
    fcntl = None


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on a folder (flock on its descriptor), held for the body."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class ReportWriteError(OSError):
    """The report folder cannot be written (read-only, full); the message names it, its files stay as they were."""


def writable(out_dir: str | Path) -> Path:
    """out_dir, created if absent, once a probe file could be written there and removed: a read-only folder is a
    ReportWriteError naming it before any of the report's work is spent, not a traceback after it."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ReportWriteError(f"{out_dir}: cannot write the report there ({e.strerror or e}); the files there "
                               "are unchanged") from e
    return out_dir


def publish(staging: Path, out_dir: Path) -> list[Path]:
    """Move every file of `staging` into `out_dir` as one set (module docstring); returns the new paths."""
    names = sorted(p.name for p in staging.iterdir() if p.is_file())
    with locked(out_dir):
        tmps = []
        try:
            for name in names:
                tmp = out_dir / f".{name}.tmp-{os.getpid()}"
                try:
                    shutil.copyfile(staging / name, tmp)
                except OSError as e:  # e.g. the disk filled: nothing of out_dir was replaced yet
                    raise ReportWriteError(f"{out_dir}: cannot write the report there ({e.strerror or e}); the "
                                           "files there are unchanged") from e
                tmps.append(tmp)
            for tmp, name in zip(tmps, names):
                os.replace(tmp, out_dir / name)
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
    return [out_dir / name for name in names]


@contextlib.contextmanager
def staged_report(out_dir: str | Path) -> Iterator[Path]:
    """A temporary folder to write a report into; its files replace out_dir's when the body succeeds."""
    out_dir = writable(out_dir)
    staging = Path(tempfile.mkdtemp(prefix="report-"))
    try:
        yield staging
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
