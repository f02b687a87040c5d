"""The dagster-slurm torchrun launcher: its job script as text, and dagster-slurm's local mode end to end."""


import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from assets.launch import write_job
from assets.slurm import TorchrunLauncher
from ul_pipeline.config import load_config
from ul_pipeline.data.shards import write_shards
from ul_pipeline.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
ENTRY = str(REPO / "assets" / "pipes_entry.py")


def script(launcher: TorchrunLauncher, **kw) -> str:
    plan = launcher.prepare_execution(ENTRY, "/env/bin/python", "/scratch/run1",
                                      {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"}, **kw)
    return "\n".join(plan.payload)


def test_the_slurm_job_script_runs_one_torchrun_per_node_meeting_at_the_head_node():
    text = script(TorchrunLauncher(nproc_per_node=4, rdzv_port=29511, max_restarts=2, payload_args=["/j/job.json"]),
                  extra_env={"PYTHONPATH": "/repo"})
    srun = next(line for line in text.splitlines() if line.strip().startswith("srun "))
    assert "--ntasks-per-node=1" in srun and '--nodes="$NNODES"' in srun
    assert ('-m torch.distributed.run --nnodes "$NNODES" --rdzv-backend c10d --rdzv-endpoint "$HEAD:29511" '
            '--rdzv-id "$RDZV_ID" --nproc-per-node 4 --max-restarts 2 ' + ENTRY + " /j/job.json") in srun
    assert 'NNODES="${SLURM_NNODES:-1}"' in text and 'RDZV_ID="$SLURM_JOB_ID"' in text
    assert 'HEAD="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in text
    for line in ("export DAGSTER_PIPES_CONTEXT=ctx", "export DAGSTER_PIPES_MESSAGES=msg", "export PYTHONPATH=/repo"):
        assert line in text.splitlines()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0  # valid bash


def test_the_job_script_exports_secrets_by_name_only_and_refuses_their_values(tmp_path):
    launcher = TorchrunLauncher(nproc_per_node=2, payload_args=["/j/job.json"])
    with pytest.raises(ValueError, match="extra_env AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: a secret is not "
                                         "written into the job script"):
        script(launcher, extra_env={"PYTHONPATH": "/repo", "AWS_SECRET_ACCESS_KEY": "ul-slurm-secret",
                                    "AWS_ACCESS_KEY_ID": "ul-slurm-key"})
    plan = launcher.prepare_execution(ENTRY, "/env/bin/python", str(tmp_path), {"DAGSTER_PIPES_CONTEXT": "ctx"},
                                      extra_env={"PYTHONPATH": "/repo"})
    head = plan.payload[:plan.payload.index('if [ -n "${SLURM_JOB_ID:-}" ]; then')]
    assert "export AWS_SECRET_ACCESS_KEY  # by name: the value comes from the submitting environment" in head
    env = {"PATH": os.environ["PATH"], "AWS_SECRET_ACCESS_KEY": "ul-slurm-secret"}  # no AWS_SESSION_TOKEN: set -u holds
    out = subprocess.run(["bash", "-c", "\n".join([*head, 'exec printenv AWS_SECRET_ACCESS_KEY PYTHONPATH'])],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["ul-slurm-secret", "/repo"], out.stderr


@pytest.mark.slow  # ~20-50 s: a 2-rank torchrun under dagster-slurm
def test_dagster_slurm_local_mode_trains_stage1_on_two_ranks_and_rank0_reports(tmp_path, fmnist_400_source):
    from dagster_slurm.pipes_clients import LocalPipesClient

    shards = str(tmp_path / "shards")
    write_shards(fmnist_400_source, shards, shard_size=150, val_size=50, seed=0, resolution=32, channels=1,
                 num_classes=10)
    cfg = load_config("smoke", ["stage1.train.total_samples=64", "compute.device=cpu"])
    job = write_job("stage1", cfg, tmp_path, shards_url=shards, run_dir=str(tmp_path / "run"))
    launcher = TorchrunLauncher(nproc_per_node=2, payload_args=[str(job)])

    @dg.asset
    def stage1_on_slurm(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # require_pixi=False: this repo's venv, not a pixi environment, runs the payload
        client = LocalPipesClient(launcher=launcher, base_dir=str(tmp_path / "slurm"), require_pixi=False)
        env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": os.environ["PATH"]}
        return client.run(context=context, payload_path=ENTRY, extra_env=env).get_materialize_result()

    result = dg.materialize([stage1_on_slurm])
    assert result.success
    (mat,) = result.asset_materializations_for_node("stage1_on_slurm")
    assert mat.metadata["world_size"].value == 2 and mat.metadata["reported_by_rank"].value == 0
    assert mat.metadata["samples_seen"].value == 64
    assert load_checkpoint(tmp_path / "run" / "last.pt", kind="stage1")["samples_seen"] == 64
