"""Launchers of a training or extraction step: in this process, or under torchrun through Dagster Pipes.

With `compute.nproc_per_node` (or `compute.nnodes`) above 1 the asset hands its step to
`torchrun ... -m assets.pipes_entry JOB.json` through `PipesSubprocessClient`; rank 0 of the group
opens Pipes, streams its logs, and reports the step's metadata once at the end. The Slurm path
(assets/slurm.py) runs the same entry point with `srun torchrun` on every node.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, PipesSubprocessClient
from omegaconf import DictConfig

from ul_pipeline import config as config_lib
from ul_pipeline.data.storage import credentials_by_name

ENTRY = "assets.pipes_entry"
REPO = Path(__file__).resolve().parent.parent


def is_distributed(cfg: DictConfig) -> bool:
    """True when the step should run under torchrun (more than one process)."""
    return cfg.compute.nproc_per_node > 1 or cfg.compute.nnodes > 1


def torchrun_args(compute: DictConfig) -> list[str]:
    """torchrun flags from compute.*: one machine uses --standalone (a free local port)."""
    args = [f"--nproc-per-node={compute.nproc_per_node}", f"--max-restarts={compute.max_restarts}"]
    if compute.nnodes == 1:
        return ["--standalone", *args]
    return [f"--nnodes={compute.nnodes}", f"--rdzv-backend={compute.rdzv_backend}",
            f"--rdzv-endpoint={compute.rdzv_endpoint}", f"--rdzv-id={compute.rdzv_id}", *args]


def write_job(stage: str, cfg: DictConfig, folder: Path, **paths: Any) -> Path:
    """The step's description for every rank: stage, recorded config, paths, storage options.

    It holds no secret (it outlives a killed step, and on a cluster it sits on a shared filesystem):
    storage credentials are named (`{"env": "AWS_SECRET_ACCESS_KEY"}`) and reach the ranks through
    their environment; config values from `${oc.env:...}` keep that text (config.to_dict).
    """
    if paths.get("storage_options"):
        paths["storage_options"] = credentials_by_name(paths["storage_options"])[0]
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{stage}-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump({"stage": stage, "config": config_lib.to_dict(cfg), **paths}, f)
    return Path(name)


class LocalTorchrun:
    """A launcher: the step under torchrun on this machine (compute.nnodes > 1: this is one of the nodes)."""

    def run(self, context: AssetExecutionContext, stage: str, cfg: DictConfig, folder: Path, **paths: Any) -> dict:
        return run_with_torchrun(context, stage, cfg, folder, **paths)


def launcher_for(compute, cfg: DictConfig):
    """The launcher of a training or extraction step (`.run(context, stage, cfg, folder, **paths)`), or None
    to run it in this process. `compute` is the ComputeResource (its `launcher` and `slurm_*` fields)."""
    choice = getattr(compute, "launcher", None)
    if choice == "slurm":
        from assets.sbatch import SlurmBatch, SlurmSettings

        return SlurmBatch(SlurmSettings(**compute.slurm_settings()))
    if choice not in (None, "torchrun"):
        raise config_lib.ConfigError(f"resource compute.launcher: {choice!r} is not one of torchrun, slurm")
    return LocalTorchrun() if choice == "torchrun" or is_distributed(cfg) else None


def run_with_torchrun(context: AssetExecutionContext, stage: str, cfg: DictConfig, folder: Path,
                      **paths: Any) -> dict:
    """Run `stage` under torchrun through Pipes; returns the metadata rank 0 reported."""
    job = write_job(stage, cfg, folder, **paths)
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(cfg.compute), "-m", ENTRY, str(job)]
    context.log.info(f"{stage}: {' '.join(command)}")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           **credentials_by_name(paths.get("storage_options"))[1]}  # the credentials the job file names
    try:
        invocation = PipesSubprocessClient(cwd=str(REPO), env=env).run(context=context, command=command)
        return dict(invocation.get_materialize_result().metadata or {})
    finally:
        job.unlink(missing_ok=True)
