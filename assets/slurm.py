"""A torchrun launcher for dagster-slurm: `srun torchrun` on every node of the allocation.

dagster-slurm's `ComputeResource` runs a payload through a launcher (its `BashLauncher`, `RayLauncher`,
`SparkLauncher`); it has none for torchrun, so `TorchrunLauncher` builds the job script: on Slurm,
one `torchrun` per node (`srun --ntasks-per-node=1`) meeting at the first node of the allocation
(c10d rendezvous), N processes each; outside Slurm (dagster-slurm's `local` mode) one
`torchrun --standalone`. The payload is `assets/pipes_entry.py JOB.json` (see assets/launch.py);
its rank 0 writes Pipes messages to the file dagster-slurm reads.

No secret is written into the script (a file in the job's folder on the cluster, `launch.sh` in
local mode): the variables in `env_by_name` (the storage credentials by default) are exported by
name only, so their values come from the environment the job is submitted from (sbatch and srun
pass it on by default; local mode inherits the Dagster process's).
"""

from __future__ import annotations

import shlex
from typing import Any, Dict, List, Optional

from dagster_slurm.config.runtime import RuntimeVariant
from dagster_slurm.launchers.base import ComputeLauncher, ExecutionPlan
from pydantic import Field

from ul_pipeline.data.storage import CREDENTIAL_ENV


class TorchrunLauncher(ComputeLauncher):
    """Runs the payload under torchrun: `srun torchrun --nnodes $SLURM_NNODES --rdzv-endpoint <head>:<port>`."""

    nproc_per_node: int = Field(default=1, description="processes (GPUs) per node")
    rdzv_port: int = Field(default=29400, description="c10d rendezvous port on the head node")
    max_restarts: int = Field(default=0, description="torchrun --max-restarts (restarted groups resume)")
    payload_args: List[str] = Field(default_factory=list, description="arguments after the payload path")
    env_by_name: List[str] = Field(
        default_factory=lambda: list(CREDENTIAL_ENV.values()),
        description="secrets the job takes from the submitting environment; never written into the script")

    def torchrun_line(self, python: str, payload: str, standalone: bool = False) -> str:
        """One node's torchrun; `$NNODES`, `$HEAD` and `$RDZV_ID` are set by the script (Slurm only)."""
        group = ("--standalone" if standalone else
                 f"--nnodes \"$NNODES\" --rdzv-backend c10d --rdzv-endpoint \"$HEAD:{self.rdzv_port}\" "
                 "--rdzv-id \"$RDZV_ID\"")
        return " ".join([shlex.quote(python), "-m torch.distributed.run", group,
                         f"--nproc-per-node {self.nproc_per_node} --max-restarts {self.max_restarts}",
                         shlex.quote(payload), *(shlex.quote(a) for a in self.payload_args)])

    def prepare_execution(self, payload_path: str, python_executable: str, working_dir: str,
                          pipes_context: Dict[str, str], extra_env: Optional[Dict[str, str]] = None,
                          allocation_context: Optional[Dict[str, Any]] = None,
                          activation_script: Optional[str] = None) -> ExecutionPlan:
        lines = ["#!/bin/bash", "set -euo pipefail", f"cd {shlex.quote(working_dir)}",
                 f": > {shlex.quote(working_dir + '/messages.jsonl')}"]
        if activation_script:
            lines.append(f"source {shlex.quote(activation_script)}")
        secrets = sorted(set(extra_env or {}) & set(self.env_by_name))
        if secrets:
            raise ValueError(f"extra_env {', '.join(secrets)}: a secret is not written into the job script; set it "
                             "in the environment the job is submitted from (the script exports it by name)")
        lines += [f"export {k}={shlex.quote(str(v))}" for k, v in {**pipes_context, **(extra_env or {})}.items()]
        lines += [f"export {name}  # by name: the value comes from the submitting environment"
                  for name in self.env_by_name]
        lines += [
            'if [ -n "${SLURM_JOB_ID:-}" ]; then',
            '  NNODES="${SLURM_NNODES:-1}"',
            '  HEAD="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            '  RDZV_ID="$SLURM_JOB_ID"',
            "  srun --nodes=\"$NNODES\" --ntasks-per-node=1 --kill-on-bad-exit=1 "
            + self.torchrun_line(python_executable, payload_path),
            "else  # dagster-slurm's local mode: one machine",
            "  " + self.torchrun_line(python_executable, payload_path, standalone=True),
            "fi", ""]
        return ExecutionPlan(kind=RuntimeVariant.SHELL, payload=lines, environment=pipes_context,
                             resources={"nodes": None, "gpus_per_node": self.nproc_per_node})
