"""`python -m ul_pipeline`, except that the process SIGKILLs itself once, mid-run (kill -9: no cleanup at all).

Usage: kill_once.py MARKER KILL_AT_SAMPLES <ul_pipeline CLI args...>. The first time the training loop
reaches samples_seen == KILL_AT_SAMPLES it creates MARKER and kills itself; a re-run finds the marker
and runs to the end (resuming from the last checkpoint).
"""

import os
import signal
import sys
from pathlib import Path

from ul_pipeline import cli
from ul_pipeline.train import loop

marker, kill_at, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
derive_seed = loop.derive_seed


def derive_seed_or_die(seed: int, rank: int, samples_seen: int) -> int:
    if samples_seen == kill_at and not marker.exists():
        marker.write_text(f"killed at samples_seen={samples_seen}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return derive_seed(seed, rank, samples_seen)


loop.derive_seed = derive_seed_or_die  # the loop seeds every step through this name
sys.exit(cli.main(args))
