"""The pipeline on a real Slurm cluster of two nodes on this machine (the `slurm_cluster` fixture).

Steps go through `assets.sbatch.SlurmBatch` (compute resource `launcher: slurm`): sbatch from the
Dagster process, one torchrun per node, Pipes messages through a file. Checked against the same
steps in one process, and under faults: a rank SIGKILLed, a node lost mid-job, a job cancelled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.data import dataset_shards
from assets.latents import latent_store
from assets.stage1 import ul_autoencoder
from assets.stage2 import base_model
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from tests.conftest import _free_port as free_port
from ul_pipeline.latents.store import open_store
from ul_pipeline.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TRAINING = [dataset_shards, ul_autoencoder, latent_store, base_model]
SLURM = {"launcher": "slurm", "nnodes": 2, "nproc_per_node": 1, "slurm_poll_s": 0.5}


def resources(root: Path, **compute) -> dict:
    return {"storage": StorageResource(root=str(root)), "experiment_config": ExperimentConfigResource(overrides=[]),
            "compute": ComputeResource(device="cpu", **compute)}


def max_dw(a: Path, b: Path, kind: str) -> float:
    """Largest |w_a - w_b| over the raw and EMA weights of two checkpoints."""
    ca, cb = load_checkpoint(a, kind=kind), load_checkpoint(b, kind=kind)
    return max(float((ca[p][k].float() - cb[p][k].float()).abs().max())
               for p in ("model", "ema") for k in ca[p] if ca[p][k].is_floating_point())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """Shards, Stage 1, latents and Stage 2 of `smoke` in this process: the reference."""
    root = tmp_path_factory.mktemp("one_process")
    assert dg.materialize(TRAINING, partition_key="smoke", resources=resources(root)).success
    return root


@pytest.fixture
def on_cluster(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


@pytest.mark.slow  # ~2 min: `dagster job execute` of the smoke chain with three Slurm jobs of two nodes
def test_the_smoke_chain_from_dagster_job_execute_on_two_nodes_equals_one_process(on_cluster, one_process, tmp_path):
    home, root = tmp_path / "dagster_home", tmp_path / "artifacts"
    home.mkdir()
    run_config = tmp_path / "run.yaml"
    run_config.write_text(yaml.safe_dump({"resources": {
        "compute": {"config": {"device": "cpu", **SLURM, "slurm_rdzv_port": free_port()}},
        "storage": {"config": {"root": str(root)}}}}))
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "ul_pipeline_dagster",
                           "-j", "smoke", "-c", str(run_config)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs, ref = root / "runs" / "smoke", one_process / "runs" / "smoke"
    assert max_dw(runs / "stage1" / "last.pt", ref / "stage1" / "last.pt", "stage1") < 1e-4
    assert max_dw(runs / "stage2" / "last.pt", ref / "stage2" / "last.pt", "stage2") < 1e-4
    (store,), (ref_store,) = (list((r / "smoke").glob("latents-*.zarr")) for r in (root, one_process))
    z, z_ref = (open_store(str(s)).z_clean[:] for s in (store, ref_store))
    assert float(abs(z - z_ref).max()) < 1e-4

    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        for asset in ("ul_autoencoder", "latent_store", "base_model"):
            event = instance.get_latest_materialization_event(AssetKey(asset))
            meta = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
            assert meta["world_size"] == 2 and meta["slurm_num_nodes"] == 2, (asset, meta)
            assert meta["slurm_nodes"] == "n[1-2]" and int(meta["slurm_job_id"]) > 0
            assert Path(meta["slurm_log"]).is_file()


def stage1_on_cluster(root: Path, monkeypatch, fault: str | None = None, at: int = 320, node: str = "n2",
                      **compute):
    """Materialize shards + Stage 1 of `smoke` on two nodes, optionally through tests/helpers/faulty_entry.py."""
    marker = root / "fault.marker"
    if fault:
        for k, v in {"UL_FAULT": fault, "UL_FAULT_AT": str(at), "UL_FAULT_MARKER": str(marker),
                     "UL_FAULT_NODE": node}.items():
            monkeypatch.setenv(k, v)
        compute["slurm_entry"] = "tests.helpers.faulty_entry"
    res = resources(root, **SLURM, slurm_rdzv_port=free_port(), **compute)
    return marker, lambda: dg.materialize([dataset_shards, ul_autoencoder], partition_key="smoke", resources=res,
                                          raise_on_error=False)


@pytest.mark.slow  # ~1 min: a two-node Stage 1 whose rank 1 dies once; torchrun restarts the group in the job
def test_a_rank_killed_mid_job_restarts_and_ends_identical(on_cluster, one_process, tmp_path, monkeypatch):
    marker, run = stage1_on_cluster(tmp_path, monkeypatch, fault="kill_rank", max_restarts=1)
    result = run()
    assert result.success
    assert marker.read_text().startswith("rank 1 killed at samples_seen=320")
    starts = marker.with_name(marker.name + ".starts").read_text()
    assert "torchrun restart 1" in starts  # the group came back within the same Slurm job
    ckpt = tmp_path / "runs" / "smoke" / "stage1" / "last.pt"
    assert max_dw(ckpt, one_process / "runs" / "smoke" / "stage1" / "last.pt", "stage1") < 1e-4


def processes_of_node(node: str) -> list[int]:
    """The job processes a node runs (their environment names it), and the slurmstepd above them."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"SLURMD_NODENAME={node}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.add(int(proc.name))
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if (Path("/proc") / str(parent) / "cmdline").read_bytes().startswith(b"slurmstepd"):
                    pids.add(parent)
        except (OSError, ValueError, IndexError):
            continue
    return sorted(pids)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def in_background(fn):
    import threading

    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    thread.start()
    return thread, box


@pytest.mark.slow  # ~1.5 min: node n2 stops answering mid-job; Slurm fails the node, requeues the job, it resumes
def test_a_node_lost_mid_job_is_requeued_and_ends_identical(on_cluster, one_process, tmp_path, monkeypatch):
    marker, run = stage1_on_cluster(tmp_path, monkeypatch, fault="hang_node", node="n2")
    thread, box = in_background(run)
    wait_for(marker.exists, 300, "node n2 to reach samples_seen 320")
    # the node dies as a crashed machine does: its slurmd stops answering, its processes stop (no FIN, no RST)
    on_cluster.kill_node("n2")
    frozen = processes_of_node("n2")
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: "down" in on_cluster.node_states().get("n2", "").lower(), 120, "Slurm to mark n2 down")
    for pid in frozen:  # the machine reboots: what ran on it is gone
        os.kill(pid, signal.SIGKILL)
    on_cluster.start_node("n2")
    thread.join(timeout=600)
    result = box["result"]
    assert result.success
    (event,) = result.asset_materializations_for_node("ul_autoencoder")
    assert event.metadata["slurm_restarts"].value >= 1  # requeued once
    starts = marker.with_name(marker.name + ".starts").read_text()
    assert "job restart 1" in starts
    ckpt = tmp_path / "runs" / "smoke" / "stage1" / "last.pt"
    assert max_dw(ckpt, one_process / "runs" / "smoke" / "stage1" / "last.pt", "stage1") < 1e-4
    on_cluster.wait_idle(60)


@pytest.mark.slow  # ~40 s
def test_a_cancelled_job_fails_its_step_clearly(on_cluster, tmp_path, monkeypatch):
    marker, run = stage1_on_cluster(tmp_path, monkeypatch, fault="hang_node", node="n1")
    thread, box = in_background(run)
    wait_for(marker.exists, 300, "the job to reach samples_seen 320")
    jobs = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, env=os.environ).stdout
    (job_id,) = [line.split()[0] for line in jobs.splitlines() if "ul-stage1-smoke" in line]
    subprocess.run(["scancel", job_id], check=True, env=os.environ)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the step hangs after scancel"
    result = box["result"]
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert f"Slurm job {job_id} ended CANCELLED" in text and "slurm-" in text, text
    on_cluster.wait_idle(60)


def test_a_two_node_stage1_equals_one_process_and_carries_slurm_metadata(on_cluster, one_process, tmp_path,
                                                                         monkeypatch):
    """The default suite's Slurm check (~1 min): a real two-node job from Dagster, its metadata, no leftovers."""
    _, run = stage1_on_cluster(tmp_path, monkeypatch)
    result = run()
    assert result.success
    (event,) = result.asset_materializations_for_node("ul_autoencoder")
    meta = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    assert meta["world_size"] == 2 and meta["slurm_num_nodes"] == 2 and meta["slurm_nodes"] == "n[1-2]"
    assert meta["samples_seen"] == 640 and meta["slurm_restarts"] == 0
    folder = tmp_path / "runs" / "smoke" / "stage1"
    log = Path(meta["slurm_log"]).read_text()
    assert f"job {meta['slurm_job_id']} on n[1-2]" in log
    assert not list(folder.glob("*.json")) and not list(folder.glob("*.pipes.jsonl"))  # job and message files gone
    assert max_dw(folder / "last.pt", one_process / "runs" / "smoke" / "stage1" / "last.pt", "stage1") < 1e-4


@pytest.mark.slow  # ~30 s
def test_a_dagster_step_stopped_while_its_job_runs_cancels_the_job(on_cluster, tmp_path, monkeypatch):
    """A terminated Dagster run (here: the poll interrupted) leaves no job running on the cluster."""
    from assets import sbatch

    seen = {}

    def interrupted(job_id, env, poll_s, requeue, log):
        seen["job"] = job_id
        wait_for(lambda: sbatch.job_info(job_id, env).get("JobState") == "RUNNING", 120, "the job to run")
        raise KeyboardInterrupt  # what Dagster raises in a step whose run is terminated

    monkeypatch.setattr(sbatch, "wait_for", interrupted)
    _, run = stage1_on_cluster(tmp_path, monkeypatch)
    assert not run().success
    state = wait_for(lambda: (s := sbatch.job_info(seen["job"]).get("JobState")) in ("CANCELLED", "COMPLETED") and s,
                     60, "the job to end")
    assert state == "CANCELLED"
    on_cluster.wait_idle(60)
