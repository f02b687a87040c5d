"""A config value read from the environment (`${oc.env:NAME}`) is used by the run but recorded as its text.

Checkpoints, latent-store attributes, job files and Dagster metadata all write `to_dict` / `to_yaml`;
a secret passed through the environment must leave no trace there, and a stored config must still
compare equal to the current one (resume, reuse) and load again where the variable is set.
"""

import uuid

from ul_pipeline.config import config_hash, from_dict, load_config, to_dict, to_yaml

SECRET_URI = "${oc.env:UL_TEST_SECRET}"
SMALL = ["data.source=shards", f"data.uri={SECRET_URI}", "data.val_size=50", "data.shard_size=150",
         "stage1.train.total_samples=64", "stage1.train.checkpoint_every_samples=64", "encode.block_size=128",
         "eval.num_samples=16", "sample.decoder_steps=2", "compute.device=cpu"]


def test_values_from_the_environment_are_recorded_as_their_interpolation_text(monkeypatch):
    monkeypatch.setenv("UL_TEST_SECRET", "s3://bucket/secret-token-1")
    cfg = load_config("smoke", [f"data.uri={SECRET_URI}", "name=run-${oc.env:UL_TEST_SECRET,none}",
                                "stage1.preset=${stage2.preset}"])
    assert cfg.data.uri == "s3://bucket/secret-token-1"  # the run sees the value
    record = to_dict(cfg)
    assert record["data"]["uri"] == SECRET_URI and record["name"] == "run-${oc.env:UL_TEST_SECRET,none}"
    assert record["stage1"]["preset"] == "tiny"  # other interpolations resolve as before
    assert "secret-token" not in to_yaml(cfg) and f"uri: {SECRET_URI}" in to_yaml(cfg)

    monkeypatch.setenv("UL_TEST_SECRET", "s3://bucket/rotated-token-2")  # a stored config loads with today's value
    loaded = from_dict(record)
    assert loaded.data.uri == "s3://bucket/rotated-token-2" and to_dict(loaded) == record
    assert config_hash(loaded) == config_hash(cfg)  # resume/reuse compare the records: a rotated secret is no change


def test_a_key_interpolating_an_environment_key_is_recorded_as_text_too(monkeypatch):
    monkeypatch.setenv("UL_TEST_SECRET", "secret-token-3")
    cfg = load_config("smoke", [f"data.uri={SECRET_URI}", "compute.rdzv_id=${data.uri}"])
    assert cfg.compute.rdzv_id == "secret-token-3"
    assert "secret-token" not in str(to_dict(cfg)) and to_dict(cfg)["compute"]["rdzv_id"] == SECRET_URI


def test_an_environment_secret_reaches_the_run_but_no_checkpoint_store_or_metrics(tmp_path, monkeypatch,
                                                                                  fmnist_400_source):
    """~6 s: shards, Stage 1, extraction and evaluation in-process on tiny nets."""
    from ul_pipeline.data import write_shards
    from ul_pipeline.evaluation.image import evaluate
    from ul_pipeline.lifecycle import encode_latents, make_shards, run_stage1
    from ul_pipeline.versioning import choose_run_dir, stage_code_version

    token = f"secret-{uuid.uuid4().hex}"  # the source location is the secret: only the environment knows it
    write_shards(fmnist_400_source, str(tmp_path / token), shard_size=150, val_size=50, seed=0, resolution=32,
                 channels=1, num_classes=10)
    monkeypatch.setenv("UL_TEST_SECRET", str(tmp_path / token))
    cfg = load_config("smoke", SMALL)
    shards, run_dir, store = str(tmp_path / "shards"), tmp_path / "stage1", tmp_path / "latents.zarr"
    manifest = make_shards(cfg, shards)  # reads the secret location: the run used the value
    assert manifest.num_samples("train") + manifest.num_samples("val") == 400
    run_stage1(cfg, shards, run_dir)
    encode_latents(run_dir / "last.pt", shards, str(store), cfg=cfg)
    evaluate(run_dir / "last.pt", shards, tmp_path / "evaluation", cfg=cfg, log=lambda _: None)

    written = [*sorted(run_dir.rglob("*")), *sorted(store.rglob("*")), tmp_path / "evaluation" / "metrics.json"]
    leaks = [str(p) for p in written if p.is_file() and token.encode() in p.read_bytes()]
    assert (run_dir / "last.pt").is_file() and (store / "zarr.json").is_file() and not leaks, leaks
    assert SECRET_URI.encode() in (store / "zarr.json").read_bytes()  # the store's stage1_config names the variable
    choice = choose_run_dir(run_dir, "stage1", to_dict(cfg), stage_code_version("stage1"),
                            {"dataset_manifest_sha256": manifest.sha256})
    assert choice.status == "reuse"  # the recorded config still equals the run's


def test_another_value_behind_an_env_interpolation_is_another_data_set(monkeypatch, tmp_path):
    """The record keeps the variable's name, but the shards' identity follows its value."""
    from ul_pipeline.config import load_config
    from ul_pipeline.config.sweeps import data_hash

    monkeypatch.setenv("UL_TEST_DATA_URI", str(tmp_path / "a"))
    a = data_hash(load_config("smoke", ["data.source=image_folder", "data.uri=${oc.env:UL_TEST_DATA_URI}"]))
    monkeypatch.setenv("UL_TEST_DATA_URI", str(tmp_path / "b"))
    b = data_hash(load_config("smoke", ["data.source=image_folder", "data.uri=${oc.env:UL_TEST_DATA_URI}"]))
    assert a != b
