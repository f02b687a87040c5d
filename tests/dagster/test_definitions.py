"""The Dagster wiring: definitions load, resources resolve environment, the library stays Dagster-free."""

import datetime
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import defs
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.config.sweeps import sweep_names, sweep_points

REPO = Path(__file__).resolve().parents[2]
ASSETS = {"dataset_shards": "data", "ul_autoencoder": "stage1", "latent_store": "latents",
          "base_model": "stage2", "evaluation": "evaluation"}
BLOCKING = {("ul_autoencoder", "weights_finite"), ("latent_store", "complete"),
            ("latent_store", "count_matches_shards"), ("latent_store", "z_clean_finite")}
WARNING = {("evaluation", "psnr_above_floor"), ("evaluation", "bits_per_pixel_in_band")}


def test_definitions_resolve_jobs_assets_checks_and_schedule():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == set(ASSETS) | {"study"}
    for name, group in ASSETS.items():
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == group, name
        assert {"smoke", "smoke_reuse", "demo", "paper_imagenet512"} <= set(node.partitions_def.get_partition_keys())
        assert node.description and "\n" not in node.description.strip(), name  # one line: the UI text
    checks = {(k.asset_key.to_user_string(), k.name): graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert set(checks) == BLOCKING | WARNING
    assert all(checks[k].blocking for k in BLOCKING) and not any(checks[k].blocking for k in WARNING)
    assert graph.get(dg.AssetKey("latent_store")).parent_keys == {dg.AssetKey("dataset_shards"),
                                                                  dg.AssetKey("ul_autoencoder")}

    study = graph.get(dg.AssetKey("study"))  # one partition per sweep, reading evaluation of all its points
    assert study.group_name == "study" and study.description and "\n" not in study.description.strip()
    assert study.partitions_def.get_partition_keys() == sweep_names()
    assert study.parent_keys == {dg.AssetKey("evaluation")}
    mapping = graph.get_partition_mapping(dg.AssetKey("study"), dg.AssetKey("evaluation"))
    assert mapping.downstream_partition_keys_by_upstream_partition_key == {
        point: sweep for sweep in sweep_names() for point in sweep_points(sweep)}
    assert {k.to_user_string() for k in defs.resolve_job_def("sweep_study").asset_layer.executable_asset_keys} \
        == {"study"}

    jobs = {name: defs.resolve_job_def(name) for name in ("smoke", "demo", "full")}
    assert jobs["smoke"].run_tags["dagster/partition"] == "smoke"
    assert jobs["demo"].run_tags["dagster/partition"] == "demo"
    assert "dagster/partition" not in jobs["full"].run_tags  # chosen at launch
    for job in jobs.values():
        assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(ASSETS)

    repo = defs.get_repository_def()
    batch = repo.get_schedule_def("nightly_batch")
    assert batch.default_status == dg.DefaultScheduleStatus.STOPPED and batch.job_name == "full"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, repository_def=repo,
                                            scheduled_execution_time=datetime.datetime(2026, 1, 2, 2))
        requests = batch.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["demo"] and requests[0].run_key == "demo-2026-01-02"


def test_ul_pipeline_never_imports_dagster():
    code = ("import sys, ul_pipeline, ul_pipeline.lifecycle, ul_pipeline.evaluation.image, ul_pipeline.cli, ul_pipeline.data, "
            "ul_pipeline.evaluation.study, "
            "ul_pipeline.config.sweeps; "
            "assert 'dagster' not in sys.modules, sorted(m for m in sys.modules if m.startswith('dagster'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def test_storage_resource_paths_local_and_s3(tmp_path, monkeypatch):
    for var in ("UL_STORAGE_ROOT", "UL_RUNS_DIR", "UL_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    local = StorageResource()
    assert local.root_url() == str(tmp_path / "artifacts")  # relative default, resolved to absolute
    assert local.shards_url("demo", "0123456789ab") == f"{tmp_path}/artifacts/demo/shards-0123456789ab"
    assert local.latent_store_url("demo", "0123456789ab" + "f" * 52) == f"{tmp_path}/artifacts/demo/latents-0123456789ab.zarr"
    assert local.history_url() == f"{tmp_path}/artifacts/metrics_history"
    assert local.run_dir("demo", "stage1") == tmp_path / "artifacts" / "runs" / "demo" / "stage1"
    assert local.storage_options() is None

    monkeypatch.setenv("UL_STORAGE_ROOT", "elsewhere")
    assert StorageResource().root_url() == str(tmp_path / "elsewhere")
    assert StorageResource(root="explicit").root_url() == str(tmp_path / "explicit")  # config beats environment

    s3 = StorageResource(root="s3://bucket/prefix/")
    assert s3.shards_url("demo", "0123456789ab") == "s3://bucket/prefix/demo/shards-0123456789ab"
    assert s3.history_url() == "s3://bucket/prefix/metrics_history"
    assert s3.runs_path() == tmp_path / "artifacts" / "runs"  # checkpoints stay local
    assert s3.storage_options() is None  # the default AWS credential chain
    monkeypatch.setenv("UL_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert s3.storage_options() == {"key": "id", "secret": "secret",
                                    "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
                                    "config_kwargs": {"s3": {"addressing_style": "path"}}}


def test_compute_and_experiment_config_resources_apply_overrides(tmp_path):
    assert ComputeResource().overrides() == []
    compute = ComputeResource(device="cpu", precision="fp32", workers=2)
    assert compute.overrides() == ["compute.device=cpu", "compute.precision=fp32", "compute.workers=2"]
    cfg = ExperimentConfigResource(overrides=["eval.fid=false"]).load("demo", compute.overrides())
    assert (cfg.name, cfg.compute.device, cfg.compute.workers, cfg.eval.fid) == ("demo", "cpu", 2, False)
    from ul_pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="stage1.c_fl"):
        ExperimentConfigResource(overrides=["stage1.c_fl=2"]).load("smoke")
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "experiments" / "tiny.yaml").write_text("stage1: {c_lf: 1.7}\n")
    assert ExperimentConfigResource(config_dir=str(configs)).load("tiny").stage1.c_lf == 1.7


def test_workspace_points_at_the_definitions_module():
    import yaml

    location = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert location["module_name"] == "ul_pipeline_dagster" and location["working_directory"] == "."
    assert os.path.exists(REPO / "assets" / "definitions.py")
