"""Slurm without SSH: a step submitted with `sbatch` from the machine Dagster runs on, and watched.

Users who run Dagster on a cluster's login node (or any host with the Slurm client and the shared
filesystem) want their steps on the compute nodes with nothing between: `SlurmBatch` writes a job
script beside the step's checkpoint, submits it with `sbatch --parsable`, polls `scontrol show job`
until the job ends, and turns the ending into a result or a clear failure. The job script runs one
`torchrun` per node (`srun --ntasks-per-node=1`) meeting at the first node of the allocation, the
same `assets.pipes_entry JOB.json` as the local torchrun launcher; rank 0 writes its Dagster Pipes
messages to a file beside the job (the shared filesystem), which this process tails.

Faults: a rank that dies is restarted inside the job by `torchrun --max-restarts` (compute.max_restarts);
a node that fails ends the job in NODE_FAIL, and with `requeue` (the default) Slurm puts it back in
the queue, where it waits for nodes and resumes from the last checkpoint (the entry point always
resumes); the job log (`slurm-<id>.out`) is appended to, not replaced. A job cancelled with
`scancel`, timed out or failed raises a `Failure` naming the job, its state, reason, exit code and
the log's last lines. A Dagster run terminated while its job runs cancels the job.

No secret is written into the script or the job file: the storage credentials are in the environment
`sbatch` is called with, which it passes on (`--export=ALL`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from dagster import (AssetExecutionContext, Failure, MetadataValue, PipesEnvContextInjector, PipesFileMessageReader,
                     open_pipes_session)
from omegaconf import DictConfig

from assets.launch import ENTRY, REPO, write_job
from ul_pipeline.data.storage import credentials_by_name

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "SPECIAL_EXIT"}
REQUEUED = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}  # with --requeue Slurm queues these again: keep waiting


@dataclass
class SlurmSettings:
    """Where and how a step runs on the cluster (ComputeResource.slurm_* fields)."""

    partition: Optional[str] = None
    time: Optional[str] = None  # --time, e.g. "2-00:00:00"
    gpus_per_node: Optional[int] = None
    sbatch_args: list[str] = field(default_factory=list)  # anything else, e.g. ["--account=lab", "--qos=high"]
    rdzv_port: int = 29400
    requeue: bool = True
    poll_s: float = 2.0
    python: Optional[str] = None  # the interpreter on the nodes (default: this one, on a shared filesystem)
    entry: str = ENTRY  # the module every rank runs (tests swap in one that injects faults)


class SlurmError(RuntimeError):
    """The Slurm client failed (sbatch refused the job, scontrol cannot see it)."""


def _slurm(args: list[str], env: Optional[dict] = None) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} not found: the Slurm client must be installed where Dagster runs") from None
    except subprocess.TimeoutExpired:  # a hung client is a controller that does not answer (wait_for retries it)
        raise SlurmError(f"{' '.join(args[:2])} did not answer within 60 s") from None
    if out.returncode != 0:
        raise SlurmError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def job_script(settings: SlurmSettings, compute: DictConfig, job: Path, folder: Path, name: str) -> str:
    """The batch script: one torchrun per node, c10d rendezvous at the first node's address."""
    python = settings.python or sys.executable
    heads = [f"--job-name={name}", f"--nodes={compute.nnodes}", "--ntasks-per-node=1",
             f"--output={folder}/slurm-%j.out", "--open-mode=append", f"--chdir={REPO}", "--export=ALL"]
    heads += [f"--partition={settings.partition}"] * bool(settings.partition)
    heads += [f"--time={settings.time}"] * bool(settings.time)
    heads += [f"--gpus-per-node={settings.gpus_per_node}"] * bool(settings.gpus_per_node)
    heads += ["--requeue" if settings.requeue else "--no-requeue", *settings.sbatch_args]
    torchrun = [shlex.quote(python), "-m", "torch.distributed.run", '--nnodes "$SLURM_NNODES"',
                f"--nproc-per-node {compute.nproc_per_node}", f"--max-restarts {compute.max_restarts}",
                "--rdzv-backend c10d", f'--rdzv-endpoint "$HEAD_ADDR:{settings.rdzv_port}"',
                '--rdzv-id "$SLURM_JOB_ID"', "-m", shlex.quote(settings.entry), shlex.quote(str(job))]
    return "\n".join([
        "#!/bin/bash", *(f"#SBATCH {shlex.quote(h)}" for h in heads), "set -euo pipefail",
        'echo "== $(date -Is) job $SLURM_JOB_ID on $SLURM_JOB_NODELIST (restart ${SLURM_RESTART_COUNT:-0})"',
        'HEAD="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        # the first node's address as Slurm knows it (NodeAddr), so node names need not resolve
        'HEAD_ADDR="$(scontrol show node "$HEAD" -o | sed -n \'s/.* NodeAddr=\\([^ ]*\\).*/\\1/p\')"',
        'HEAD_ADDR="${HEAD_ADDR:-$HEAD}"',
        f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}",
        'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 ' + " ".join(torchrun), ""])


def submit(script: Path, env: dict) -> int:
    """sbatch the script; its job id."""
    out = _slurm(["sbatch", "--parsable", str(script)], env).strip()
    match = re.match(r"(\d+)", out)
    if not match:
        raise SlurmError(f"sbatch {script}: no job id in its answer {out!r}")
    return int(match.group(1))


def job_info(job_id: int, env: Optional[dict] = None) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, Reason, NodeList, NumNodes, ExitCode, Restarts, ...)."""
    out = _slurm(["scontrol", "show", "job", "-o", str(job_id)], env)
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(job_id: int, env: dict, poll_s: float, requeue: bool, log: Callable[[str], None],
             unreachable_s: float = 900.0) -> dict[str, str]:
    """Poll until the job has ended for good (a requeued job is followed back into the queue). A controller
    that does not answer (restarting, overloaded) is retried for `unreachable_s` before the step gives up."""
    last, since = None, None
    while True:
        try:
            info = job_info(job_id, env)
            since = None
        except SlurmError as e:
            since = since or time.monotonic()
            if time.monotonic() - since > unreachable_s:
                raise
            log(f"Slurm job {job_id}: no answer from the controller ({e}); retrying")
            time.sleep(max(poll_s, 5.0))
            continue
        state = info.get("JobState", "?")
        seen = (state, info.get("Reason"), info.get("Restarts"))
        if seen != last:
            why = f", reason {info['Reason']}" if info.get("Reason") not in (None, "None") else ""
            log(f"Slurm job {job_id}: {state}{why} (nodes {info.get('NodeList') or 'none yet'}, "
                f"requeued {info.get('Restarts', '0')} time(s))")
            last = seen
        if state in ENDED and not (requeue and state in REQUEUED):
            return info
        time.sleep(poll_s)


def log_tail(folder: Path, job_id: int, lines: int = 30, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of the job's log, read from its last `max_bytes` only (a days-long job's log
    may hold gigabytes; reading it whole would cost the Dagster process several times that in memory)."""
    path = folder / f"slurm-{job_id}.out"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            tail = f.read(max_bytes)
    except OSError:
        return f"(no {path})"
    return "\n".join(tail.decode(errors="replace").splitlines()[-lines:])


def failure(stage: str, job_id: int, info: dict[str, str], folder: Path) -> Failure:
    """What a job that did not complete tells the Dagster step: its state, reason, exit code and log."""
    return Failure(
        description=(f"{stage}: Slurm job {job_id} ended {info.get('JobState')} (reason {info.get('Reason')}, "
                     f"exit code {info.get('ExitCode')}, nodes {info.get('NodeList')}); its log "
                     f"{folder}/slurm-{job_id}.out ends:\n{log_tail(folder, job_id)}"),
        metadata={"slurm_job_id": job_id, "slurm_state": info.get("JobState", "?")})


class SlurmBatch:
    """A launcher: the step as one Slurm job of compute.nnodes nodes x compute.nproc_per_node ranks."""

    def __init__(self, settings: SlurmSettings):
        self.settings = settings

    def run(self, context: AssetExecutionContext, stage: str, cfg: DictConfig, folder: Path, **paths: Any) -> dict:
        folder = Path(folder)
        job = write_job(stage, cfg, folder, **paths)
        script, messages = job.with_suffix(".sbatch"), job.with_suffix(".pipes.jsonl")
        env = {**os.environ, **credentials_by_name(paths.get("storage_options"))[1]}
        try:
            with open_pipes_session(context=context, context_injector=PipesEnvContextInjector(),
                                    message_reader=PipesFileMessageReader(str(messages))) as session:
                env.update(session.get_bootstrap_env_vars())
                name = f"ul-{stage}-{context.partition_key}"[:64]
                script.write_text(job_script(self.settings, cfg.compute, job, folder, name))
                job_id = submit(script, env)
                context.log.info(f"{stage}: Slurm job {job_id} submitted ({cfg.compute.nnodes} node(s) x "
                                 f"{cfg.compute.nproc_per_node} rank(s); script {script}, "
                                 f"log {folder}/slurm-{job_id}.out)")
                try:
                    info = wait_for(job_id, env, self.settings.poll_s, self.settings.requeue, context.log.info)
                except BaseException:  # the Dagster run was terminated (or the poll failed): do not leave it running
                    subprocess.run(["scancel", str(job_id)], env=env, capture_output=True)
                    context.log.warning(f"{stage}: Slurm job {job_id} cancelled because its Dagster step stopped")
                    raise
            if info.get("JobState") != "COMPLETED":
                raise failure(stage, job_id, info, folder)
            results = session.get_results()
            return {**(dict(results[0].metadata or {}) if results else {}), "slurm_job_id": job_id,
                    "slurm_nodes": info.get("NodeList", "?"),
                    "slurm_num_nodes": int(info.get("NumNodes", "0").split("-")[0] or 0),
                    "slurm_restarts": int(info.get("Restarts", "0") or 0),
                    "slurm_log": MetadataValue.path(str(folder / f"slurm-{job_id}.out"))}
        finally:
            job.unlink(missing_ok=True)
            messages.unlink(missing_ok=True)
