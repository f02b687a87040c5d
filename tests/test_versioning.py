"""Versioned artifacts: stage code versions, run folders (resume / reuse / afresh), Dagster staleness."""

from pathlib import Path

import dagster as dg
import pytest
import torch
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver  # what the UI's staleStatus uses

from assets.artifacts import resolve
from assets.data import dataset_shards
from assets.latents import latent_store
from assets.stage1 import ul_autoencoder
from assets.stage2 import base_model
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.config import to_dict
from ul_pipeline.latents.store import open_store
from ul_pipeline.train.checkpoint import file_sha256, save_checkpoint
from ul_pipeline.versioning import choose_run_dir, run_identity, stage_code_version

CONFIG = {"stage1": {"c_lf": 1.5, "train": {"total_samples": 100}}, "compute": {"device": "cpu"}}
ASSETS = [dataset_shards, ul_autoencoder, latent_store, base_model]


def fake_run(run_dir: Path, *, complete: bool, code: str, config: dict = CONFIG) -> Path:
    return save_checkpoint(run_dir / "last.pt", {"kind": "stage1", "complete": complete, "config": config,
                                                 "stage_code_version": code, "dataset_manifest_sha256": "m"})


def test_stage_code_version_hashes_the_stage_sources_only():
    v = stage_code_version("stage1")
    assert len(v) == 12 and int(v, 16) >= 0
    assert stage_code_version("stage1") == v and stage_code_version("stage2") != v
    with pytest.raises(KeyError, match="unknown stage 'stage9'"):
        stage_code_version("stage9")


def test_code_versions_cover_every_module_that_changes_the_math():
    """The import closure reaches what a hand-kept file list missed (the frame-conditioned base model,
    every noise draw in distributed.py, the flips, the encoder function used for extraction)."""
    from ul_pipeline.versioning import import_closure, STAGE_ROOTS

    stage1, encode, stage2 = (set(import_closure(STAGE_ROOTS[s])) for s in ("stage1", "encode", "stage2"))
    assert {"ul_pipeline.distributed", "ul_pipeline.data.augment", "ul_pipeline.stage1.rate",
            "ul_pipeline.train.loop", "ul_pipeline.nets.presets"} <= stage1
    assert {"ul_pipeline.stage2.frame_conditioned", "ul_pipeline.distributed", "ul_pipeline.data.augment",
            "ul_pipeline.latents.standardize"} <= stage2
    assert {"ul_pipeline.latents.encode", "ul_pipeline.latents.store", "ul_pipeline.stage1.model"} <= encode
    streamed = {"ul_pipeline.train.streamed", "ul_pipeline.data.streaming", "ul_pipeline.data.stream_plan"}
    assert streamed | {"ul_pipeline.data.loader"} <= stage1  # the order of streamed batches is part of a run
    assert streamed | {"ul_pipeline.latents.dataset"} <= stage2
    assert not any(m.startswith("ul_pipeline.config") for m in stage1 | encode | stage2)  # compared as configs
    assert not any(m.startswith("ul_pipeline.evaluation.") and m != "ul_pipeline.evaluation.metrics"
                   for m in stage1 | stage2)  # evaluation code never retrains a stage


def test_a_change_to_any_module_in_the_closure_changes_the_version(tmp_path, monkeypatch):
    import shutil

    import ul_pipeline
    from ul_pipeline import versioning

    copy = tmp_path / "ul_pipeline"
    shutil.copytree(Path(ul_pipeline.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(ul_pipeline, "__file__", str(copy / "__init__.py"))
    versioning.stage_code_version.cache_clear()
    before = {s: versioning.stage_code_version(s) for s in ("stage1", "stage2")}
    with open(copy / "distributed.py", "a") as f:  # a noise draw's module, far from stage1/
        f.write("\n# changed\n")
    versioning.stage_code_version.cache_clear()
    after = {s: versioning.stage_code_version(s) for s in ("stage1", "stage2")}
    with open(copy / "config" / "schema.py", "a") as f:
        f.write("\n# a new key elsewhere\n")
    versioning.stage_code_version.cache_clear()
    assert before["stage1"] != after["stage1"] and before["stage2"] != after["stage2"]
    assert versioning.stage_code_version("stage1") == after["stage1"]
    versioning.stage_code_version.cache_clear()


def test_complete_run_of_another_code_version_is_not_reused(tmp_path):
    inputs = {"dataset_manifest_sha256": "m"}
    fake_run(tmp_path / "stage1", complete=True, code="old")
    before = (tmp_path / "stage1" / "last.pt").read_bytes()
    choice = choose_run_dir(tmp_path / "stage1", "stage1", CONFIG, "new", inputs)
    assert choice.status == "afresh" and choice.run_dir == tmp_path / f"stage1-{run_identity(CONFIG, 'new', inputs, 'stage1')}"
    assert any("stage code version" in r and "'old'" in r for r in choice.reasons)
    assert choose_run_dir(tmp_path / "stage1", "stage1", CONFIG, "old", inputs).status == "reuse"
    other = {**CONFIG, "stage1": {**CONFIG["stage1"], "c_lf": 2.0}}
    moved = choose_run_dir(tmp_path / "stage1", "stage1", other, "old", inputs)
    assert moved.status == "afresh" and any("stage1.c_lf" in r for r in moved.reasons)
    longer = {**CONFIG, "stage1": {**CONFIG["stage1"], "train": {"total_samples": 200}}, "compute": {"device": "cuda"}}
    assert choose_run_dir(tmp_path / "stage1", "stage1", longer, "old", inputs).status == "reuse"  # length/device
    assert choose_run_dir(tmp_path / "stage1", "stage1", CONFIG, "old", {"dataset_manifest_sha256": "x"}).status == "afresh"
    fake_run(choice.run_dir, complete=False, code="new")  # the fresh run, interrupted, resumes in its own folder
    again = choose_run_dir(tmp_path / "stage1", "stage1", CONFIG, "new", inputs)
    assert again.status == "resume" and again.run_dir == choice.run_dir
    assert (tmp_path / "stage1" / "last.pt").read_bytes() == before  # the old run untouched


def test_an_unfinished_run_never_resumes_on_other_inputs(tmp_path):
    """Stage 2 killed on encoder A's latents, the store then rebuilt from encoder B: a new run, not a resume."""
    save_checkpoint(tmp_path / "stage2" / "last.pt", {"kind": "stage2", "complete": False, "config": CONFIG,
                                                      "stage_code_version": "v", "encoder_sha256": "A" * 64})
    choice = choose_run_dir(tmp_path / "stage2", "stage2", CONFIG, "v", {"encoder_sha256": "B" * 64})
    assert choice.status == "afresh" and choice.run_dir != tmp_path / "stage2"
    assert any("other inputs" in r and "'AAAA" in r for r in choice.reasons)
    assert choose_run_dir(tmp_path / "stage2", "stage2", CONFIG, "v", {"encoder_sha256": "A" * 64}).status == "resume"


def interrupted_stage1(run_dir: Path, manifest: str = "m1"):
    """(cfg, images) of a Stage-1 run on shards `manifest`, killed after its first checkpoint in run_dir."""
    from tests.stage1.test_model import StopAt
    from ul_pipeline.config import load_config
    from ul_pipeline.stage1.training import train_stage1

    cfg = load_config("smoke", ["stage1.train.total_samples=64", "stage1.train.batch_size=16",
                                "stage1.train.checkpoint_every_samples=16", "compute.precision=fp32"])
    images = torch.randint(0, 256, (32, 1, 32, 32), dtype=torch.uint8)
    with pytest.raises(KeyboardInterrupt):
        train_stage1(cfg, images, run_dir, [StopAt(1)], extra={"dataset_manifest_sha256": manifest})
    return cfg, images


def test_the_loop_refuses_to_resume_on_other_inputs(tmp_path):
    """A direct call (no choose_run_dir) on a folder whose unfinished run saw other shards is refused."""
    from ul_pipeline.config import load_config
    from ul_pipeline.stage1.training import train_stage1
    from ul_pipeline.train.checkpoint import CheckpointError

    cfg, images = interrupted_stage1(tmp_path / "s1")
    with pytest.raises(CheckpointError, match=r"trained on other inputs:\n  dataset_manifest_sha256: "
                                              r"checkpoint has 'm1', this run has 'm2'"):
        train_stage1(cfg, images, tmp_path / "s1", extra={"dataset_manifest_sha256": "m2"})
    # the same inputs resume, also with other evaluation, sampler, Stage-2 and compute settings
    other = load_config("smoke", ["stage1.train.total_samples=64", "stage1.train.batch_size=16",
                                  "stage1.train.checkpoint_every_samples=16", "compute.precision=fp32",
                                  "eval.fid=true", "sample.guidance=3.0", "stage2.train.lr=0.01"])
    assert train_stage1(other, images, tmp_path / "s1", extra={"dataset_manifest_sha256": "m1"}).state.samples_seen == 64


def test_only_the_config_a_stage_consumes_decides_reuse_and_resume(tmp_path):
    """eval.*, sample.*, compute.* and Stage 2's settings once retrained Stage 1 (and refused its resume)."""
    inputs = {"dataset_manifest_sha256": "m"}
    full = {**CONFIG, "data": {"resolution": 32}, "stage2": {"lr": 1e-3}, "eval": {"fid": True},
            "sample": {"guidance": 1.0}}
    fake_run(tmp_path / "stage1", complete=True, code="v", config=full)
    elsewhere = {**full, "stage2": {"lr": 2e-3}, "eval": {"fid": False}, "sample": {"guidance": 2.0},
                 "compute": {"device": "cpu", "deterministic": True}}
    assert choose_run_dir(tmp_path / "stage1", "stage1", elsewhere, "v", inputs).status == "reuse"
    assert choose_run_dir(tmp_path / "stage1", "stage1", {**full, "data": {"resolution": 64}}, "v",
                          inputs).status == "afresh"
    # Stage 2 consumes its own section and the encoder's lambda(0), not the rest of stage1.*
    save_checkpoint(tmp_path / "stage2" / "last.pt", {"kind": "stage2", "complete": True, "stage_code_version": "v",
                                                      "config": {**full, "stage1": {"c_lf": 1.5, "logsnr_0": 5.0}},
                                                      "encoder_sha256": "e"})
    s2 = {**full, "stage1": {"c_lf": 3.0, "logsnr_0": 5.0}, "eval": {"fid": False}}
    assert choose_run_dir(tmp_path / "stage2", "stage2", s2, "v", {"encoder_sha256": "e"}).status == "reuse"
    s2 = {**full, "stage1": {"c_lf": 1.5, "logsnr_0": 4.0}}
    assert choose_run_dir(tmp_path / "stage2", "stage2", s2, "v", {"encoder_sha256": "e"}).status == "afresh"


def test_unfinished_run_resumes_whatever_the_code_version(tmp_path):
    fake_run(tmp_path / "s1", complete=False, code="old")
    choice = choose_run_dir(tmp_path / "s1", "stage1", CONFIG, "new", {"dataset_manifest_sha256": "m"})
    assert choice.status == "resume" and choice.run_dir == tmp_path / "s1"
    assert choose_run_dir(tmp_path / "none", "stage1", CONFIG, "new").status == "new"


FAST = ["data.limit=228", "stage1.train.total_samples=64", "stage2.train.total_samples=64"]  # 128 train images


def resources(root: Path, overrides: list[str] | None = None) -> dict:
    return {"storage": StorageResource(root=str(root)), "compute": ComputeResource(device="cpu"),
            "experiment_config": ExperimentConfigResource(overrides=[*FAST, *(overrides or [])])}


def artifacts(res: dict):
    return resolve("smoke", res["storage"], res["experiment_config"], res["compute"])


def test_retrained_stage1_makes_latents_and_base_model_stale_in_dagster(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    status = lambda key: get_stale_status_resolver(instance, ASSETS).get_status(  # noqa: E731
        dg.AssetKey(key), partition_key="smoke")
    assert dg.materialize(ASSETS, partition_key="smoke", resources=resources(tmp_path), instance=instance).success
    first = artifacts(resources(tmp_path))
    old_ckpt, old_store = first.stage1_checkpoint, first.latent_store_url
    assert all(status(k) == StaleStatus.FRESH for k in ("ul_autoencoder", "latent_store", "base_model"))
    old_bytes = old_ckpt.read_bytes()

    # same config, same code: re-materializing Stage 1 reuses the checkpoint and stales nothing
    assert dg.materialize([ul_autoencoder], partition_key="smoke", resources=resources(tmp_path),
                          instance=instance).success
    assert status("latent_store") == StaleStatus.FRESH and old_ckpt.read_bytes() == old_bytes

    # Stage 1 retrained with another config: a new run beside the old one, downstream stale
    retrain = resources(tmp_path, ["stage1.train.seed=1"])
    result = dg.materialize([ul_autoencoder], partition_key="smoke", resources=retrain, instance=instance)
    (event,) = result.asset_materializations_for_node("ul_autoencoder")
    assert event.metadata["run_status"].value == "afresh"
    assert status("latent_store") == StaleStatus.STALE and status("base_model") == StaleStatus.STALE
    assert old_ckpt.read_bytes() == old_bytes  # never overwritten

    second = artifacts(retrain)
    assert second.stage1_checkpoint != old_ckpt and second.latent_store_url != old_store
    assert second.latent_store_url.endswith(f"latents-{file_sha256(second.stage1_checkpoint)[:12]}.zarr")
    assert dg.materialize([latent_store, base_model], partition_key="smoke", resources=retrain,
                          instance=instance).success
    assert status("latent_store") == StaleStatus.FRESH and status("base_model") == StaleStatus.FRESH
    assert open_store(old_store).meta["encoder_sha256"] == file_sha256(old_ckpt)  # the old store is kept
    base = torch.load(second.base_checkpoint, weights_only=False, map_location="cpu")
    assert base["latent_store_url"] == second.latent_store_url  # the base model knows its store
    assert base["encoder_sha256"] == file_sha256(second.stage1_checkpoint)
    assert second.base_checkpoint != first.base_checkpoint


def test_a_direct_resume_that_names_no_inputs_is_refused_when_the_checkpoint_has_them(tmp_path):
    """train_stage1 called without `extra` once resumed on any data and erased the recorded manifest."""
    from ul_pipeline.stage1.training import train_stage1
    from ul_pipeline.train.checkpoint import CheckpointError

    cfg, images = interrupted_stage1(tmp_path / "s1")
    with pytest.raises(CheckpointError, match=r"dataset_manifest_sha256: checkpoint has 'm1', this run names none"):
        train_stage1(cfg, images, tmp_path / "s1")


def test_stage2_on_a_store_of_the_same_encoder_over_other_shards_starts_afresh(tmp_path):
    from types import SimpleNamespace

    from ul_pipeline.config import load_config
    from ul_pipeline.lifecycle import stage2_run

    cfg = load_config("smoke")
    save_checkpoint(tmp_path / "stage2" / "last.pt", {
        "kind": "stage2", "complete": False, "config": to_dict(cfg), "stage_code_version": stage_code_version("stage2"),
        "encoder_sha256": "e" * 64, "dataset_manifest_sha256": "a" * 64})
    other = SimpleNamespace(meta={"encoder_sha256": "e" * 64, "dataset_manifest_sha256": "b" * 64})
    choice = stage2_run(cfg, other, tmp_path / "stage2")
    assert choice.status == "afresh" and choice.run_dir != tmp_path / "stage2"
    same = SimpleNamespace(meta={"encoder_sha256": "e" * 64, "dataset_manifest_sha256": "a" * 64})
    assert stage2_run(cfg, same, tmp_path / "stage2").status == "resume"


def test_package_inits_count_in_the_code_version():
    """Importing ul_pipeline.stage1.model runs ul_pipeline/stage1/__init__.py: an edit there is an edit to Stage 1."""
    from ul_pipeline.versioning import STAGE_ROOTS, import_closure

    closure = set(import_closure(STAGE_ROOTS["stage1"]))
    assert {"ul_pipeline", "ul_pipeline.stage1", "ul_pipeline.nets", "ul_pipeline.train"} <= closure


def test_stage1_refuses_shards_written_from_another_data_section(tmp_path, fmnist_400_source):
    from ul_pipeline.config import load_config
    from ul_pipeline.config.sweeps import data_sha256
    from ul_pipeline.data.shards import write_shards
    from ul_pipeline.lifecycle import run_stage1

    cfg = load_config("smoke", ["stage1.train.total_samples=16", "stage1.train.batch_size=16"])
    other = load_config("smoke", ["data.seed=1"])
    url = str(tmp_path / "shards")
    write_shards(fmnist_400_source, url, shard_size=150, val_size=50, seed=1, resolution=32, channels=1,
                 num_classes=10, data_sha256=data_sha256(other))
    with pytest.raises(ValueError, match=r"written from another data section"):
        run_stage1(cfg, url, tmp_path / "s1")
