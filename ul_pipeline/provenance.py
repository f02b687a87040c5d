"""Which code wrote an artifact: the human-facing version recorded in checkpoints, stores and metrics.

Two places the package can run from:
  - a git checkout of this project (the package's parent folder is the top of a work tree whose
    pyproject.toml names ul-pipeline): `0.1.0+<commit>` with `.dirty` for uncommitted changes to
    tracked files, asked from git, since the sources may have moved on since any install;
  - an installed wheel (or any other copy): the version setuptools-scm computed from git when the
    wheel was built and wrote into `ul_pipeline/_version.py`, e.g. `0.1.dev1234+gbfaa6f9` (the `g`
    part is the commit, a `.dYYYYMMDD` suffix a dirty tree). Git is never asked there: the folder a
    virtualenv lives in may be another repository whose commit says nothing about this code.
Without either (a copy of the sources with no build), `0.1.0+unknown`.

This is for people reading an artifact; whether a run is reused or retrained is decided by the
stages' own code versions (hashes of their modules' sources, `ul_pipeline.versioning`). `_version.py`
is read by name, not imported, so it is in no stage's import closure and a rebuild retrains nothing.
"""

from __future__ import annotations

import importlib
import subprocess
from functools import lru_cache
from pathlib import Path

RELEASE = "0.1.0"  # the release the sources are at (a checkout's versions are RELEASE+commit)
PACKAGE_DIR = Path(__file__).resolve().parent


def source_checkout() -> Path | None:
    """The top of the git work tree this package's sources are in, when it is a checkout of ul-pipeline."""
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if not (root / ".git").exists() or not pyproject.is_file() or 'name = "ul-pipeline"' not in pyproject.read_text():
        return None
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return root if top and Path(top).resolve() == root else None


def built_version() -> str | None:
    """The version written into `_version.py` at build time, or None when there is no such file."""
    if not (PACKAGE_DIR / "_version.py").is_file():
        return None
    return str(importlib.import_module(f"{__package__}._version").version)


def checkout_version(root: Path) -> str:
    """RELEASE+<12-digit commit>[.dirty] of the checkout at `root` (RELEASE+unknown when git cannot say)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{RELEASE}+{sha}{'.dirty' if dirty else ''}" if sha else f"{RELEASE}+unknown"


def code_version() -> str:
    """The version of the code running now: a checkout's commit, else the version the wheel was built as."""
    root = source_checkout()
    if root is not None:
        return checkout_version(root)
    return built_version() or f"{RELEASE}+unknown"


@lru_cache(maxsize=None)
def package_version() -> str:
    """`ul_pipeline.__version__`: code_version() once per process."""
    return code_version()
