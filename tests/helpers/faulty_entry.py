"""`-m tests.helpers.faulty_entry JOB.json`: assets.pipes_entry with one fault injected, once, mid-run.

For the Slurm fault tests. From the environment (the submitting process's, passed on by sbatch):
UL_FAULT=kill_rank (rank 1 SIGKILLs itself) or UL_FAULT=hang_node (every rank on node UL_FAULT_NODE
stops and waits, so the test can take the node down under it), when the training loop seeds the step
at samples_seen == UL_FAULT_AT, the first time only (UL_FAULT_MARKER records that it happened and is
what the test waits for). Every rank start appends a line to UL_FAULT_MARKER.starts.
"""

import os
import signal
import sys
import time
from pathlib import Path

from assets import pipes_entry
from ul_pipeline.train import loop

fault, at, marker = os.environ["UL_FAULT"], int(os.environ["UL_FAULT_AT"]), Path(os.environ["UL_FAULT_MARKER"])
node = os.environ.get("SLURMD_NODENAME", "?")
with open(marker.with_name(marker.name + ".starts"), "a") as starts:
    starts.write(f"node {node} rank {os.environ.get('RANK')} job restart {os.environ.get('SLURM_RESTART_COUNT', '0')} "
                 f"torchrun restart {os.environ.get('TORCHELASTIC_RESTART_COUNT')}\n")
derive_seed = loop.derive_seed


def derive_seed_with_fault(seed: int, rank: int, samples_seen: int) -> int:
    if samples_seen == at and not marker.exists():
        if fault == "kill_rank" and os.environ.get("RANK") == "1":
            marker.write_text(f"rank 1 killed at samples_seen={samples_seen}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "hang_node" and node == os.environ.get("UL_FAULT_NODE"):
            marker.write_text(f"node {node} hangs at samples_seen={samples_seen}\n")
            time.sleep(3600)  # until the test kills this node
    return derive_seed(seed, rank, samples_seen)


loop.derive_seed = derive_seed_with_fault  # the loop seeds every step through this name
sys.exit(pipes_entry.main(sys.argv[1:]))
