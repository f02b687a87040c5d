"""`dagster job execute` of the smoke job in a subprocess, with runs recorded in a temporary DAGSTER_HOME."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def execute(args: list[str], home: Path, root: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home), "UL_STORAGE_ROOT": str(root)}
    env.pop("UL_RUNS_DIR", None)
    proc = subprocess.run([DAGSTER, "job", "execute", "-m", "ul_pipeline_dagster", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc


def recorded_runs(home: Path) -> list:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return [(r, instance.get_records_for_run(r.run_id).records) for r in instance.get_runs()]


def test_job_execute_smoke_without_a_partition_argument_records_the_run(tmp_path):
    home, root = dagster_home(tmp_path), tmp_path / "artifacts"
    execute(["-j", "smoke"], home, root, timeout=900)
    ((run, records),) = recorded_runs(home)
    assert (run.job_name, run.status, run.tags["dagster/partition"]) == ("smoke", dg.DagsterRunStatus.SUCCESS, "smoke")
    events = [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event]
    materialized = {e.event_specific_data.materialization.asset_key.to_user_string(): e.partition
                    for e in events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
    assert materialized == {k: "smoke" for k in ("dataset_shards", "ul_autoencoder", "latent_store",
                                                 "base_model", "evaluation")}
    checks = {e.event_specific_data.check_name: e.event_specific_data.passed
              for e in events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    assert len(checks) == 6 and all(checks[k] for k in ("weights_finite", "complete", "count_matches_shards",
                                                         "z_clean_finite"))
    assert (root / "runs" / "smoke" / "evaluation" / "metrics.json").is_file()
    assert len(list((root / "smoke").glob("latents-*.zarr/zarr.json"))) == 1  # keyed by the encoder hash


@pytest.mark.slow
def test_job_execute_full_takes_the_partition_from_tags(tmp_path):
    home, root = dagster_home(tmp_path), tmp_path / "artifacts"
    execute(["-j", "full", "--tags", '{"dagster/partition": "smoke"}'], home, root, timeout=1800)
    ((run, _),) = recorded_runs(home)
    assert (run.job_name, run.status, run.tags["dagster/partition"]) == ("full", dg.DagsterRunStatus.SUCCESS, "smoke")
    assert (root / "runs" / "smoke" / "stage2" / "last.pt").is_file()


@pytest.mark.slow  # ~90 s: three torchrun launches plus the evaluation
def test_job_execute_smoke_on_two_ranks_reports_through_pipes(tmp_path):
    home, root = dagster_home(tmp_path), tmp_path / "artifacts"
    run_config = tmp_path / "two_ranks.yaml"
    run_config.write_text("resources:\n  compute:\n    config: {nproc_per_node: 2, device: cpu}\n")
    proc = execute(["-j", "smoke", "-c", str(run_config)], home, root, timeout=900)
    assert (proc.stdout + proc.stderr).count("torch.distributed.run --standalone --nproc-per-node=2") == 3  # Stage 1, encode, Stage 2
    ((run, records),) = recorded_runs(home)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    events = [r.event_log_entry for r in records]
    opened = [e for e in events if "successfully opened dagster pipes" in (e.user_message or "")]
    assert len(opened) == 3  # rank 0 only, once per step
    metadata = {e.dagster_event.event_specific_data.materialization.asset_key.to_user_string():
                e.dagster_event.event_specific_data.materialization.metadata
                for e in events if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
    for asset in ("ul_autoencoder", "base_model"):  # what rank 0 reported through Pipes, beside the asset's own
        md = metadata[asset]
        assert md["world_size"].value == 2 and md["reported_by_rank"].value == 0
        assert md["samples_seen"].value == 640 and md["final_loss_nats"].value > 0
    assert metadata["latent_store"]["world_size"].value == 2 and metadata["latent_store"]["complete"].value
    assert metadata["latent_store"]["encode_seconds"].value > 0
