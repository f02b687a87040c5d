"""Step processes end with the process that started them.

`dagster job execute` runs each step in a child process (the multiprocess executor's spawn). Killed
with `kill -9`, the parent cannot stop its children, and a step that was training would go on with
parent 1 until its run ended. `stop_with_parent` (called when the step imports `assets`, before any work) makes
the step process receive SIGKILL the moment its parent dies: on Linux through
`prctl(PR_SET_PDEATHSIG)`, elsewhere through a daemon thread that watches the parent id once a
second. SIGKILL, not SIGTERM: Dagster maps SIGTERM in a step to an interrupt it handles by reporting
to the (dead) parent, and a step killed that way was seen to go on training. What a training step
had saved (`last.pt`, written atomically) stays, and a re-run resumes from it. Processes that are not a multiprocessing child (the in-process
executor of `dg.materialize`, a run worker, a test) are left alone.

The run itself stays STARTED in the Dagster instance (nobody is left to record its end): end it in
the UI (Terminate, then "Force termination immediately") or with `dagster run delete RUN_ID`.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent(sig: int = signal.SIGKILL, *, force: bool = False) -> str:
    """Arrange for this process to get `sig` when its parent dies; what was arranged: 'prctl', 'thread' or
    'none' (not a multiprocessing child, unless `force`)."""
    if not force and multiprocessing.parent_process() is None:
        return "none"
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), sig)
            return "prctl"

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
    return "thread"
