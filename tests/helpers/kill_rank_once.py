"""`python -m ul_pipeline` under torchrun, except that rank 1 SIGKILLs itself once, mid-run.

Usage: kill_rank_once.py MARKER KILL_AT_SAMPLES <ul_pipeline CLI args...>. The first time rank 1
reaches samples_seen == KILL_AT_SAMPLES it creates MARKER and kills itself; a group restarted by
`torchrun --max-restarts` finds the marker and runs to the end.
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
    if os.environ.get("RANK") == "1" and samples_seen == kill_at and not marker.exists():
        marker.write_text(f"rank 1 killed at samples_seen={samples_seen}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return derive_seed(seed, rank, samples_seen)


loop.derive_seed = derive_seed_or_die  # the loop seeds every step through this name
sys.exit(cli.main(args))
