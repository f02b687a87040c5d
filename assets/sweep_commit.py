"""Committing a sweep point's result folder as it finishes (`sweep_runner --commit`), and finding one left uncommitted.

Only the point's folder is committed: other staged or unstaged changes of the working tree stay as they were.
A runner killed between writing a result and committing it leaves the folder written but uncommitted; its
result stands, so the next run skips the point, and `uncommitted` tells it to commit the folder then.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable


def uncommitted(results_dir: str, point) -> bool:
    """True when git sees changes in the point's result folder (untracked or modified); False outside a git tree."""
    folder = Path(results_dir).resolve() / point.label
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", str(folder)], check=True, capture_output=True,
                             text=True, cwd=folder.parent).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(out.strip())


def commit_result(results_dir: str, point, log: Callable[[str], None]) -> None:
    """git add + commit of the point's result folder alone (other staged changes stay staged, uncommitted)."""
    folder = Path(results_dir).resolve() / point.label  # absolute: git runs in the folder's parent
    msg = f"{point.key}: committed result (sweep_runner --commit)"
    for attempt in range(5):  # a second runner process may hold the index lock for a moment
        try:
            for cmd in (["git", "add", "--", str(folder)], ["git", "commit", "-q", "-m", msg, "--", str(folder)]):
                subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=folder.parent)
            log(f"  committed {folder}")
            return
        except (OSError, subprocess.CalledProcessError) as e:
            error = getattr(e, "stderr", "") or str(e)
            if "index.lock" not in error:
                break
            time.sleep(2.0 * (attempt + 1))
    log(f"  WARNING: could not commit {folder} ({error.strip()}); commit it by hand")
