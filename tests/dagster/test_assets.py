"""The assets in-process: the smoke chain, each asset invoked directly, the gates, and latent-store reuse."""

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from assets.artifacts import resolve
from assets.data import ShardsConfig, dataset_shards
from assets.evaluation import evaluation, evaluation_checks
from assets.latents import latent_store, latent_store_checks
from assets.stage1 import ul_autoencoder, weights_finite
from assets.stage2 import base_model
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.config import load_config
from ul_pipeline.config.sweeps import data_hash, data_sha256
from ul_pipeline.data import read_manifest
from ul_pipeline.latents.store import open_store
from ul_pipeline.train.checkpoint import file_sha256

ASSETS = [dataset_shards, ul_autoencoder, latent_store, base_model, evaluation]
CHECKS = [weights_finite, latent_store_checks, evaluation_checks]
BLOCKING = {"weights_finite", "complete", "count_matches_shards", "z_clean_finite"}


def resources(root: Path, overrides: list[str] | None = None) -> dict:
    return {"storage": StorageResource(root=str(root)), "compute": ComputeResource(device="cpu"),
            "experiment_config": ExperimentConfigResource(overrides=overrides or [])}


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def store_dir(root: Path, experiment: str = "smoke") -> Path:
    """The experiment's one latent store (its path carries the encoder's short hash)."""
    (path,) = (root / experiment).glob("latents-*.zarr")
    return path


def shards_dir(root: Path, experiment: str = "smoke") -> Path:
    """The experiment's one shard set (its folder name carries the hash of its data section)."""
    (path,) = (root / experiment).glob("shards-*")
    return path


def snapshot(path: Path) -> dict[str, tuple[int, str]]:
    """Every file under `path` (or the file itself): (mtime_ns, sha256)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*")  # writers' locks aside
                                                 if p.is_file() and not p.name.endswith(".lock"))
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole smoke chain with its checks, materialized once into a temporary storage root."""
    root = tmp_path_factory.mktemp("dagster_smoke")
    result = dg.materialize([*ASSETS, *CHECKS], partition_key="smoke", resources=resources(root))
    return SimpleNamespace(root=root, result=result, runs=root / "runs" / "smoke")


def test_smoke_chain_materializes_with_checks_and_metadata(smoke):
    assert smoke.result.success
    evaluations = {e.check_name: e for e in smoke.result.get_asset_check_evaluations()}
    assert set(evaluations) == BLOCKING | {"psnr_above_floor", "bits_per_pixel_in_band"}
    assert all(evaluations[name].passed for name in BLOCKING)
    assert all(e.partition == "smoke" for e in evaluations.values())
    assert evaluations["psnr_above_floor"].severity == dg.AssetCheckSeverity.WARN  # smoke numbers are meaningless

    ev = metadata(smoke.result, "evaluation")
    metrics = json.loads((smoke.runs / "evaluation" / "metrics.json").read_text())
    for key in ("bits_per_pixel", "bits_per_image", "bits_per_latent_dim", "psnr"):
        assert isinstance(ev[key], float) and ev[key] == pytest.approx(metrics[key]), key
    assert ev["num_samples"] == 64 and ev["steps"] == 8
    assert ev["stage1_complete"] is True and ev["base_complete"] is True  # False would flag unfinished checkpoints
    for grid in ("reconstruction_grid", "sample_grid"):
        assert Path(ev[grid]).is_file() and "data:image/png;base64," in ev[f"{grid}_image"]
    assert "name: smoke" in ev["config"] and "device: cpu" in ev["config"]  # ComputeResource applied
    history = pl.read_parquet(smoke.root / "metrics_history" / "*.parquet")
    assert history["experiment"].to_list() == ["smoke"]

    s1 = metadata(smoke.result, "ul_autoencoder")
    ckpt = smoke.runs / "stage1" / "last.pt"
    assert s1["checkpoint"] == str(ckpt) and s1["sha256"] == file_sha256(ckpt)
    assert s1["samples_seen"] == 640 and s1["complete"] is True
    assert isinstance(s1["bits_per_pixel"], float) and isinstance(s1["loss_nats"], float)
    assert "data:image/png;base64," in s1["training_curves"]
    assert (smoke.runs / "stage1" / "training_curves.png").is_file()
    assert torch.load(ckpt, weights_only=False)["config"]["compute"]["device"] == "cpu"

    shards = metadata(smoke.result, "dataset_shards")
    assert (shards["train_samples"], shards["val_samples"], shards["status"]) == (500, 100, "written")
    store = metadata(smoke.result, "latent_store")
    assert store["num_samples"] == 500 and store["complete"] is True and store["encoder_sha256"] == s1["sha256"]
    assert store["stage1_complete"] is True
    assert store["latent_store_url"] == str(smoke.root / "smoke" / f"latents-{s1['sha256'][:12]}.zarr")
    s2 = metadata(smoke.result, "base_model")
    assert s2["samples_seen"] == 640 and s2["encoder_sha256"] == s1["sha256"]
    assert (smoke.runs / "stage2" / "training_curves.png").is_file()


def test_each_asset_invoked_directly_resumes_without_rewriting(smoke):
    res = resources(smoke.root)
    ctx = lambda: dg.build_asset_context(partition_key="smoke")  # noqa: E731
    before = {**snapshot(smoke.root / "smoke"), **snapshot(smoke.runs / "stage1" / "last.pt"),
              **snapshot(smoke.runs / "stage2" / "last.pt")}

    out = dataset_shards(context=ctx(), config=ShardsConfig(), **res)
    assert out.metadata["status"] == "kept" and out.metadata["train_samples"] == 500
    out = ul_autoencoder(context=ctx(), **res)
    assert out.metadata["samples_seen"] == 640 and "training_curves" in out.metadata
    out = latent_store(context=ctx(), **res)
    assert out.metadata["num_samples"] == 500 and "reused_from" not in out.metadata
    out = base_model(context=ctx(), **res)
    assert out.metadata["samples_seen"] == 640
    assert {**snapshot(smoke.root / "smoke"), **snapshot(smoke.runs / "stage1" / "last.pt"),
            **snapshot(smoke.runs / "stage2" / "last.pt")} == before  # finished stages are no-ops

    out = evaluation(context=ctx(), **res)
    assert out.metadata["psnr"].value == pytest.approx(metadata(smoke.result, "evaluation")["psnr"])


def test_dataset_shards_writes_keeps_and_refuses_a_changed_config(tmp_path):
    small = ["data.limit=150", "data.val_size=30", "data.shard_size=50"]
    call = lambda overrides, overwrite=False: dataset_shards(  # noqa: E731
        context=dg.build_asset_context(partition_key="smoke"), config=ShardsConfig(overwrite=overwrite),
        **resources(tmp_path, overrides))
    out = call(small)
    assert (out.metadata["train_samples"], out.metadata["val_samples"], out.metadata["shards"]) == (120, 30, 4)
    manifest = Path(out.metadata["shards_url"].path) / "manifest.parquet"
    assert manifest.parent == shards_dir(tmp_path)
    mtime = manifest.stat().st_mtime_ns
    assert call(small).metadata["status"] == "kept" and manifest.stat().st_mtime_ns == mtime
    # a set in this folder from another data section is refused, never used
    table = pl.read_parquet(manifest)
    assert table["data_sha256"][0] == data_sha256(load_config("smoke", overrides=small))
    table.with_columns(data_sha256=pl.lit("0" * 64)).write_parquet(manifest)
    with pytest.raises(dg.Failure, match="data section: the shards' hashes to 000000000000, the config's to"):
        call(small)
    # a manifest from before data_sha256 (the running study's) is kept when its columns match, refused if not
    table.drop("data_sha256").write_parquet(manifest)
    assert call(small).metadata["status"] == "kept"
    table.drop("data_sha256").with_columns(val_size=pl.lit(40)).write_parquet(manifest)
    with pytest.raises(dg.Failure, match="data.val_size: shards have 40, config has 30"):
        call(small)
    out = call(small, overwrite=True)
    assert (out.metadata["status"], out.metadata["val_samples"]) == ("written", 30)
    assert read_manifest(str(manifest.parent)).data_sha256 == table["data_sha256"][0]


def image_folder(path: Path, seed: int, count: int = 160) -> str:
    """`path/<class>/<n>.png`: `count` random 32x32 grey images in two classes."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        (path / f"c{n % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path / f"c{n % 2}" / f"{n:03d}.png")
    return str(path)


SIZES = ["data.val_size=30", "data.shard_size=50"]
IMAGES = ["data.source=image_folder", "data.uri={a}", "data.limit=150", *SIZES]
CLIPS = ["data.source=moving_fashion_mnist", "data.frames=4", "data.limit=40", "data.val_size=8", "data.shard_size=16"]
CHANGED = {  # what: (first data section, the changed one, samples it holds)
    "uri": (IMAGES, [*IMAGES, "data.uri={b}"], 150),
    "source": (IMAGES, ["data.source=fashion_mnist", "data.uri=null", "data.limit=150", *SIZES], 150),
    "limit_null": (IMAGES, [*IMAGES, "data.limit=null"], 160),
    "fps": (IMAGES, [*IMAGES, "data.fps=4.0"], 150),
    "frames": (CLIPS, [*CLIPS, "data.frames=6"], 40),
}


@pytest.mark.parametrize("what", CHANGED)
def test_dataset_shards_of_another_data_section_are_never_kept(tmp_path, what):
    """Issue 22: a changed data.source, uri, frames, fps or `limit: null` kept the old shard set (and Stage 1
    trained on the old images). Now each data section has its own set; the old one stays, untouched."""
    folders = {"a": image_folder(tmp_path / "a", seed=0), "b": image_folder(tmp_path / "b", seed=1)}
    old, new, samples = CHANGED[what]
    old, new = ([o.format(**folders) for o in overrides] for overrides in (old, new))
    call = lambda overrides: dataset_shards(  # noqa: E731
        context=dg.build_asset_context(partition_key="smoke"), config=ShardsConfig(),
        **resources(tmp_path / "root", overrides))
    first = call(old)
    assert first.metadata["status"] == "written"
    before = snapshot(tmp_path / "root" / "smoke")

    out = call(new)
    assert out.metadata["status"] == "written"
    assert out.metadata["shards_url"].path != first.metadata["shards_url"].path  # beside the old set, not over it
    assert out.metadata["train_samples"] + out.metadata["val_samples"] == samples
    if what != "fps":  # fps only resamples video files: these images come out the same
        assert out.metadata["manifest_sha256"] != first.metadata["manifest_sha256"]
    again = call(old)  # the old set is still there, untouched, and still the old section's
    assert (again.metadata["status"], again.metadata["manifest_sha256"]) == ("kept", first.metadata["manifest_sha256"])
    assert {k: v for k, v in snapshot(tmp_path / "root" / "smoke").items() if k in before} == before

def started(result: dg.ExecuteInProcessResult, step: str) -> bool:
    return any(e.step_key == step and e.event_type == dg.DagsterEventType.STEP_START for e in result.all_events)


def copy_smoke(smoke, root: Path) -> Path:
    """The smoke artifacts (shards, Stage 1, latent store) copied under another root."""
    shutil.copytree(smoke.root / "smoke", root / "smoke")
    shutil.copytree(smoke.runs / "stage1", root / "runs" / "smoke" / "stage1")
    return root


def test_blocking_check_on_latent_store_stops_stage2(smoke, tmp_path):
    root = copy_smoke(smoke, tmp_path)
    store = open_store(str(store_dir(root)), read_only=False)
    store.z_clean[3] = np.full(store.z_clean.shape[1:], np.nan, dtype=np.float32)
    result = dg.materialize([dataset_shards, ul_autoencoder, latent_store, base_model, latent_store_checks],
                            partition_key="smoke", resources=resources(root), raise_on_error=False,
                            selection=dg.AssetSelection.assets(latent_store, base_model)
                            | dg.AssetSelection.checks(*latent_store_checks.check_keys))
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["z_clean_finite"].passed is False and checks["complete"].passed
    assert checks["z_clean_finite"].metadata["non_finite_values"].value == int(np.prod(store.z_clean.shape[1:]))
    assert not started(result, "base_model")  # gated, not merely failed on NaN latents
    assert not (root / "runs" / "smoke" / "stage2").exists()


def test_blocking_check_on_ul_autoencoder_stops_encoding(smoke, tmp_path):
    root = copy_smoke(smoke, tmp_path)
    shutil.rmtree(store_dir(root))
    ckpt_path = root / "runs" / "smoke" / "stage1" / "last.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    name = next(k for k, v in ckpt["ema"].items() if v.is_floating_point())
    ckpt["ema"][name].fill_(float("inf"))
    torch.save(ckpt, ckpt_path)
    result = dg.materialize([dataset_shards, ul_autoencoder, latent_store, weights_finite], partition_key="smoke",
                            resources=resources(root), raise_on_error=False,
                            selection=dg.AssetSelection.assets(ul_autoencoder, latent_store)
                            | dg.AssetSelection.checks(*weights_finite.check_keys))
    assert not result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed is False and f"ema.{name}" in check.metadata["non_finite"].value
    assert not started(result, "latent_store") and not list((root / "smoke").glob("latents-*.zarr"))


def test_smoke_reuse_trains_its_own_base_model_on_smoke_latents_without_encoding(smoke, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a reusing experiment must not shard, train Stage 1 or encode")

    import ul_pipeline.lifecycle as lifecycle

    for target in ("assets.latents.encode_latents", "assets.stage1.run_stage1", "assets.data.make_shards"):
        monkeypatch.setattr(target, never)
    monkeypatch.setattr(lifecycle, "encoder_fn", never)
    store, ckpt = store_dir(smoke.root), smoke.runs / "stage1" / "last.pt"
    before = {**snapshot(store), **snapshot(shards_dir(smoke.root)), **snapshot(ckpt)}

    result = dg.materialize([*ASSETS, *CHECKS], partition_key="smoke_reuse", resources=resources(smoke.root))
    assert result.success
    assert {**snapshot(store), **snapshot(shards_dir(smoke.root)), **snapshot(ckpt)} == before
    for asset in ("dataset_shards", "ul_autoencoder", "latent_store"):
        meta = metadata(result, asset)
        assert meta["reused_from"] == "smoke" and meta["note"].startswith("reused from smoke"), asset
    assert metadata(result, "latent_store")["latent_store_url"] == str(store)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(checks[name].passed and checks[name].partition == "smoke_reuse" for name in BLOCKING)

    own = smoke.root / "runs" / "smoke_reuse"
    base = torch.load(own / "stage2" / "last.pt", weights_only=False)
    assert base["config"]["stage2"]["bias"] == 2.0 and base["config"]["name"] == "smoke_reuse"
    assert base["encoder_sha256"] == file_sha256(ckpt) and base["latent_store_url"] == str(store)
    assert json.loads((own / "evaluation" / "metrics.json").read_text())["experiment"] == "smoke_reuse"
    assert not (own / "stage1").exists() and not (smoke.root / "smoke_reuse").exists()
    assert metadata(result, "base_model")["latents_from"] == "smoke"


def test_reuse_fails_clearly_without_the_owner_artifacts(tmp_path):
    with pytest.raises(dg.Failure, match=r"reuses smoke's dataset shards .* Materialize dataset_shards for "
                                         r"partition 'smoke' first"):
        dataset_shards(context=dg.build_asset_context(partition_key="smoke_reuse"), config=ShardsConfig(),
                       **resources(tmp_path))
    with pytest.raises(dg.Failure, match=r"Stage-1 checkpoint .* does not exist"):
        ul_autoencoder(context=dg.build_asset_context(partition_key="smoke_reuse"), **resources(tmp_path))


def test_reuse_refuses_configs_that_misstate_the_reused_stage1_and_cycles(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(Path(__file__).resolve().parents[2] / "configs", configs)
    reuse = (configs / "experiments" / "smoke_reuse.yaml").read_text()
    (configs / "experiments" / "bad_reuse.yaml").write_text(reuse.replace("preset: tiny\n  train", "preset: tiny\n  "
                                                                          "c_lf: 2.0\n  train", 1))
    (configs / "experiments" / "loop_a.yaml").write_text("latent_store_of: loop_b\n")
    (configs / "experiments" / "loop_b.yaml").write_text("latent_store_of: loop_a\n")
    env = dict(storage=StorageResource(root=str(tmp_path)), compute=ComputeResource(),
               experiment_config=ExperimentConfigResource(config_dir=str(configs)))
    assert resolve("smoke_reuse", **env).owner == "smoke"
    with pytest.raises(ValueError, match=r"stage1.c_lf: smoke has 1.5, bad_reuse has 2.0"):
        resolve("bad_reuse", **env)
    with pytest.raises(ValueError, match="cycle: loop_a -> loop_b -> loop_a"):
        resolve("loop_a", **env)


def test_smoke_chain_on_an_s3_root(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("UL_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    root = s3_server.url("artifacts")
    res = {**resources(tmp_path), "storage": StorageResource(root=root, runs_dir=str(tmp_path / "runs"))}
    result = dg.materialize([*ASSETS, *CHECKS], partition_key="smoke", resources=res)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.check_name in BLOCKING)
    sha = metadata(result, "ul_autoencoder")["sha256"]
    assert metadata(result, "latent_store")["latent_store_url"] == f"{root}/smoke/latents-{sha[:12]}.zarr"
    bucket = s3_server.root / root.removeprefix("s3://")  # the served folder behind the bucket
    assert metadata(result, "dataset_shards")["shards_url"] == f"{root}/smoke/shards-{data_hash(load_config('smoke'))}"
    assert (shards_dir(bucket) / "manifest.parquet").is_file()
    assert (bucket / "smoke" / f"latents-{sha[:12]}.zarr" / "zarr.json").is_file()
    assert len(list((bucket / "metrics_history").glob("*.parquet"))) == 1
    assert (tmp_path / "runs" / "smoke" / "stage1" / "last.pt").is_file()  # checkpoints stay local
    assert (tmp_path / "runs" / "smoke" / "evaluation" / "metrics.json").is_file()


def test_reuse_of_a_video_store_refuses_another_context_before_any_compute(tmp_path):
    """The owner's store holds z_clean_context for the owner's stage2.context_frames only: a reusing experiment
    with another non-zero context could never train (its latent_store asset reuses, Stage 2 refuses the store,
    and re-encoding the owner's store gives the owner's context again), so resolve says so at once; no context
    (0) reads the store as it is."""
    configs = tmp_path / "configs"
    shutil.copytree(Path(__file__).resolve().parents[2] / "configs", configs)
    demo = (configs / "experiments" / "demo_video.yaml").read_text()
    assert "context_frames: 4" in demo
    (configs / "experiments" / "ctx8.yaml").write_text("latent_store_of: demo_video\n" +
                                                       demo.replace("context_frames: 4", "context_frames: 8", 1))
    (configs / "experiments" / "ctx0.yaml").write_text("latent_store_of: demo_video\n" +
                                                       demo.replace("context_frames: 4", "context_frames: 0", 1))
    env = dict(storage=StorageResource(root=str(tmp_path)), compute=ComputeResource(),
               experiment_config=ExperimentConfigResource(config_dir=str(configs)))
    assert resolve("ctx0", **env).owner == "demo_video"
    with pytest.raises(ValueError, match=r"ctx8 reuses demo_video's latent store.*stage2.context_frames=4.*"
                                         r"ctx8 has 8"):
        resolve("ctx8", **env)
