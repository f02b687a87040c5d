"""`python -m ul_pipeline` under torchrun, except that rank 1 SIGKILLs itself once, mid-run.

Usage: kill_rank_once.py MARKER KILL_AT_SAMPLES [--others-hang] <ul_pipeline CLI args...>. The first
time rank 1 reaches samples_seen == KILL_AT_SAMPLES it creates MARKER and kills itself; a group
restarted by `torchrun --max-restarts` finds the marker and runs to the end. Every worker start
appends its rank and torchrun restart count to MARKER.starts.

With --others-hang the other ranks stop at that step too, once, and wait there until their agent
restarts them, as NCCL ranks hang on a dead peer; without it, gloo ranks fail at once on the dead
peer, so every torchrun agent sees a failure of its own and no agent restarts for a membership change.
"""

import os
import signal
import sys
import time
from pathlib import Path

from ul_pipeline import cli
from ul_pipeline.train import loop

marker, kill_at, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
others_hang = args[:1] == ["--others-hang"]
args = args[1:] if others_hang else args
hung = marker.with_name(marker.name + ".hung")
with open(marker.with_name(marker.name + ".starts"), "a") as starts:
    starts.write(f"rank {os.environ.get('RANK')} restart {os.environ.get('TORCHELASTIC_RESTART_COUNT')}\n")
derive_seed = loop.derive_seed


def derive_seed_or_die(seed: int, rank: int, samples_seen: int) -> int:
    if samples_seen == kill_at and os.environ.get("RANK") == "1" and not marker.exists():
        marker.write_text(f"rank 1 killed at samples_seen={samples_seen}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    if samples_seen == kill_at and others_hang and os.environ.get("RANK") != "1" and not hung.exists():
        hung.write_text(f"rank {os.environ.get('RANK')} hung at samples_seen={samples_seen}\n")
        time.sleep(600)  # until the agent stops this worker for the restarted group
    return derive_seed(seed, rank, samples_seen)


loop.derive_seed = derive_seed_or_die  # the loop seeds every step through this name
sys.exit(cli.main(args))
