"""Sweeps as partitions: expansion, validation, shared shards, and the resumable sweep driver."""

import hashlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from assets.artifacts import resolve
from assets.data import ShardsConfig, dataset_shards
from assets.partitions import EXPERIMENTS, SWEEP_OF_POINT, SWEEPS, sweep_of_point
from assets.sweep_runner import run_sweep
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.config import ConfigError, experiment_names, load_config, to_dict
from ul_pipeline.evaluation.results import result_config
from ul_pipeline.versioning import json_sha256
from ul_pipeline.config.sweeps import data_hash, load_sweep, sweep_names, sweep_points

REPO = Path(__file__).resolve().parents[2]
SWEEP = """\
data: {limit: 150, val_size: 30, shard_size: 50}
stage1: {preset: tiny, c_lf: 2.0}
stage2: {preset: tiny}
sweep:
  grid: {stage1.c_lf: [1.3, 3.0]}
  variants:
    normal_prior: {stage1.prior: normal}
    more_data: {data.limit: 180}
"""
POINTS = ["trends:c_lf=1.3", "trends:c_lf=3.0", "trends:normal_prior", "trends:more_data"]
KEY_CHARS = re.compile(r"^[A-Za-z0-9_.=:-]+$")  # safe in folder names, S3 keys and Dagster partition selections


@pytest.fixture
def config_dir(tmp_path) -> Path:
    """base.yaml, a plain experiment and the `trends` sweep file."""
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "base.yaml", configs / "base.yaml")
    (configs / "experiments" / "plain.yaml").write_text("stage1: {c_lf: 1.7}\n")
    (configs / "experiments" / "trends.yaml").write_text(SWEEP)
    return configs


def env(root: Path, config_dir: Path, overrides: list[str] | None = None) -> dict:
    return {"storage": StorageResource(root=str(root)), "compute": ComputeResource(device="cpu"),
            "experiment_config": ExperimentConfigResource(config_dir=str(config_dir), overrides=overrides or [])}


def test_a_sweep_file_expands_into_named_points(config_dir):
    assert sweep_names(config_dir) == ["trends"]
    assert sweep_points("trends", config_dir) == {
        "trends:c_lf=1.3": {"stage1.c_lf": 1.3}, "trends:c_lf=3.0": {"stage1.c_lf": 3.0},
        "trends:normal_prior": {"stage1.prior": "normal"}, "trends:more_data": {"data.limit": 180}}
    for key in POINTS:
        cfg = load_config(key, config_dir=config_dir)
        assert cfg.name == key and cfg.stage1.preset == "tiny" and KEY_CHARS.match(key)
    assert load_config("trends:c_lf=1.3", config_dir=config_dir).stage1.c_lf == 1.3
    prior = load_config("trends:normal_prior", config_dir=config_dir)
    assert (prior.stage1.prior, prior.stage1.c_lf, prior.data.limit) == ("normal", 2.0, 150)  # the base elsewhere
    assert load_config("trends:more_data", ["data.limit=190"], config_dir=config_dir).data.limit == 190  # CLI wins
    base = load_config("trends", config_dir=config_dir)  # the file's base still loads, sweep: dropped
    assert (base.name, base.stage1.c_lf, base.stage1.prior) == ("trends", 2.0, "diffusion")
    with pytest.raises(ConfigError, match=r"no point 'trends:c_lf=9.9' \(points: trends:c_lf=1.3, "):
        load_config("trends:c_lf=9.9", config_dir=config_dir)
    with pytest.raises(ConfigError, match="'plain' has no 'sweep:' section"):
        load_config("plain:c_lf=1.3", config_dir=config_dir)


def test_a_variants_only_sweep_has_no_empty_grid_point(config_dir):
    (config_dir / "experiments" / "study.yaml").write_text(
        "stage1: {preset: tiny}\nsweep:\n  variants:\n    a: {stage1.c_lf: 3.0}\n    b: {stage1.c_lf: 6.0}\n")
    assert [p.key for p in load_sweep("study", config_dir).points] == ["study:a", "study:b"]


def test_a_multi_key_grid_is_a_product_with_short_unique_names(config_dir):
    (config_dir / "experiments" / "grid2.yaml").write_text(
        "sweep:\n  grid: {stage1.bias: [0.0, 5.0], stage2.bias: [1.0], stage1.logsnr_0: [1.0e+1]}\n")
    points = sweep_points("grid2", config_dir)
    assert list(points) == ["grid2:stage1.bias=0.0:stage2.bias=1.0:logsnr_0=10.0",
                            "grid2:stage1.bias=5.0:stage2.bias=1.0:logsnr_0=10.0"]
    cfg = load_config(list(points)[1], config_dir=config_dir)
    assert (cfg.stage1.bias, cfg.stage2.bias, cfg.stage1.logsnr_0) == (5.0, 1.0, 10.0)
    dg.StaticPartitionsDefinition(list(points))  # Dagster accepts the keys
    assert all(KEY_CHARS.match(k) for k in points)


@pytest.mark.parametrize("sweep, message", [
    ("grid: {stage1.c_fl: [1.3]}", r"sweep\.grid: unknown config key 'stage1\.c_fl'"),
    ("grid: {stage1.c_lf: []}", r"sweep\.grid\.stage1\.c_lf: empty list"),
    ("grid: {stage1.c_lf: 1.3}", r"sweep\.grid\.stage1\.c_lf: must be a list"),
    ("variants: {v: {stage1.priorr: normal}}", r"sweep\.variants\.v: unknown config key 'stage1\.priorr'"),
    ("variants: {v: {name: other}}", r"'name' cannot be swept"),
    ("variants: {'a b': {stage1.c_lf: 2.0}}", r"variant name may only hold"),
    ("grid: {data.uri: ['s3://b/x']}", r"value 's3://b/x' cannot be part of a point key"),
    ("grids: {stage1.c_lf: [1.3]}", r"unknown key\(s\) \['grids'\]"),
    ("grid: {}", r"needs a non-empty 'grid' or 'variants'"),
])
def test_a_bad_sweep_fails_naming_the_file_and_key(config_dir, sweep, message):
    path = config_dir / "experiments" / "bad.yaml"
    path.write_text("sweep:\n  " + sweep + "\n")
    for call in (lambda: sweep_points("bad", config_dir), lambda: experiment_names(config_dir)):
        with pytest.raises(ConfigError, match=message) as err:
            call()
        assert str(path) in str(err.value)


def test_a_wrong_type_in_a_point_fails_naming_the_file_and_point(config_dir):
    (config_dir / "experiments" / "typed.yaml").write_text("sweep:\n  variants: {v: {stage1.c_lf: high}}\n")
    with pytest.raises(ConfigError, match=r"typed\.yaml \(sweep point typed:v\): bad config key 'stage1.c_lf'"):
        load_config("typed:v", config_dir=config_dir)


def test_experiment_names_and_partitions_list_points_not_the_sweep_file(config_dir):
    assert experiment_names(config_dir) == ["plain", *POINTS]
    assert sweep_of_point(config_dir) == {p: "trends" for p in POINTS}
    assert dg.StaticPartitionsDefinition(experiment_names(config_dir)).get_partition_keys() == ["plain", *POINTS]
    # the repository's own partitions: every sweep's points are experiments, every sweep a study partition
    keys = set(EXPERIMENTS.get_partition_keys())
    assert set(SWEEPS.get_partition_keys()) == set(sweep_names())
    for sweep in sweep_names():
        assert sweep not in keys and set(sweep_points(sweep)) <= keys
    assert set(SWEEP_OF_POINT) <= keys and {"smoke", "demo"} <= keys


def test_points_with_equal_data_share_one_shard_set(config_dir, tmp_path):
    res = env(tmp_path / "root", config_dir)
    arts = {p: resolve(p, **res) for p in POINTS}
    shared = arts["trends:c_lf=1.3"].shards_url
    assert re.fullmatch(re.escape(str(tmp_path / "root" / "trends")) + r"/shards-[0-9a-f]{12}", shared)
    assert arts["trends:c_lf=3.0"].shards_url == arts["trends:normal_prior"].shards_url == shared
    assert arts["trends:more_data"].shards_url not in (shared, None)
    assert arts["trends:more_data"].shards_url.startswith(str(tmp_path / "root" / "trends" / "shards-"))
    plain = resolve("plain", **res)  # a plain experiment's shards are named by its data section too
    assert plain.shards_url == str(tmp_path / "root" / "plain" / f"shards-{data_hash(plain.cfg)}")
    # everything else stays the point's own
    assert arts["trends:c_lf=3.0"].stage1_dir == tmp_path / "root" / "runs" / "trends:c_lf=3.0" / "stage1"
    ckpt = arts["trends:c_lf=3.0"].stage1_checkpoint
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"a stand-in checkpoint")
    sha = hashlib.sha256(b"a stand-in checkpoint").hexdigest()
    assert arts["trends:c_lf=3.0"].latent_store_url == str(tmp_path / "root" / "trends:c_lf=3.0" / f"latents-{sha[:12]}.zarr")
    # loader-only keys do not change the shards; an override of the data section does
    assert resolve("trends:c_lf=1.3", **env(tmp_path / "root", config_dir, ["data.in_memory=false"])) \
        .shards_url == shared
    assert resolve("trends:c_lf=1.3", **env(tmp_path / "root", config_dir, ["data.seed=1"])).shards_url != shared


def test_latent_store_of_a_point_reuses_its_shared_shards(config_dir, tmp_path):
    (config_dir / "experiments" / "reuse.yaml").write_text(
        "latent_store_of: 'trends:c_lf=3.0'\ndata: {limit: 150, val_size: 30, shard_size: 50}\n"
        "stage1: {preset: tiny, c_lf: 3.0}\nstage2: {preset: tiny, bias: 1.0}\n")
    res = env(tmp_path, config_dir)
    art = resolve("reuse", **res)
    assert art.owner == "trends:c_lf=3.0" and art.reused
    assert art.shards_url == resolve("trends:c_lf=1.3", **res).shards_url
    with pytest.raises(dg.Failure, match=r"reuses trends:c_lf=3.0's Stage-1 checkpoint .* does not exist"):
        art.latent_store_url  # the store is named by the owner's encoder, which is not trained yet
    assert art.stage2_dir == tmp_path / "runs" / "reuse" / "stage2"


def test_dataset_shards_of_a_second_point_keeps_the_first_points_shards(config_dir, tmp_path):
    root = tmp_path / "root"
    res = env(root, config_dir)
    shard = lambda point: dataset_shards(context=dg.build_asset_context(partition_key=point),  # noqa: E731
                                         config=ShardsConfig(), **res)
    first = shard("trends:c_lf=1.3")
    assert first.metadata["status"] == "written" and first.metadata["train_samples"] == 120
    url = resolve("trends:c_lf=1.3", **res).shards_url
    files = {p: p.stat().st_mtime_ns for p in Path(url).iterdir()}
    second = shard("trends:normal_prior")
    assert second.metadata["status"] == "kept" and second.metadata["shards_url"].path == url
    assert second.metadata["manifest_sha256"] == first.metadata["manifest_sha256"]
    assert {p: p.stat().st_mtime_ns for p in Path(url).iterdir()} == files  # nothing rewritten
    other = shard("trends:more_data")
    assert other.metadata["status"] == "written" and other.metadata["train_samples"] == 150
    assert other.metadata["shards_url"].path != url
    assert [p.name for p in root.iterdir()] == ["trends"]  # no per-point shard folders


class FakeJob:
    """Stands in for `full` / `sweep_study`: records partitions; `full` writes what a finished point leaves."""

    def __init__(self, name: str, res: dict, calls: list, kill_at: str | None = None, fail: str | None = None):
        self.name, self.res, self.calls, self.kill_at, self.fail = name, res, calls, kill_at, fail

    def execute_in_process(self, partition_key, instance, raise_on_error):
        self.calls.append((self.name, partition_key))
        if partition_key == self.kill_at:
            raise KeyboardInterrupt  # the driver killed mid-point
        if self.name == "full" and partition_key != self.fail:
            art = resolve(partition_key, **self.res)
            shas = {}
            for key, ckpt in (("stage1_sha256", art.stage1_checkpoint), ("base_sha256", art.base_checkpoint)):
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                ckpt.write_bytes(f"{partition_key} {key}".encode())
                shas[key] = hashlib.sha256(ckpt.read_bytes()).hexdigest()
            art.evaluation_dir.mkdir(parents=True, exist_ok=True)
            config_sha256 = json_sha256(result_config(to_dict(art.cfg)))
            (art.evaluation_dir / "metrics.json").write_text(json.dumps({"experiment": partition_key, **shas,
                                                                         "config_sha256": config_sha256}))
        return SimpleNamespace(success=partition_key != self.fail, run_id=f"run-{len(self.calls)}")


def fake_defs(res: dict, calls: list, **kwargs) -> SimpleNamespace:
    return SimpleNamespace(resources=res, resolve_job_def=lambda name: FakeJob(name, res, calls, **kwargs))


def test_sweep_runner_skips_evaluated_points_and_resumes_after_a_kill(config_dir, tmp_path):
    res, calls, log = env(tmp_path, config_dir), [], []
    with pytest.raises(KeyboardInterrupt):
        run_sweep("trends", fake_defs(res, calls, kill_at="trends:normal_prior"), instance=None, log=log.append)
    assert calls == [("full", "trends:c_lf=1.3"), ("full", "trends:c_lf=3.0"), ("full", "trends:normal_prior")]

    calls.clear()
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append)
    assert calls == [("full", "trends:normal_prior"), ("full", "trends:more_data"), ("sweep_study", "trends")]
    assert any(m.startswith("[1/4] trends:c_lf=1.3: already evaluated") for m in log)
    assert any(re.match(r"\[4/4\] trends:more_data: done in [0-9.]+ s", m) for m in log)

    calls.clear()  # a checkpoint that changed after its evaluation makes the point run again
    (tmp_path / "runs" / "trends:c_lf=3.0" / "stage2" / "last.pt").write_bytes(b"retrained")
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append)
    assert calls == [("full", "trends:c_lf=3.0"), ("sweep_study", "trends")]

    calls.clear()  # so does a config its evaluation was not made from (an eval key: the checkpoints stay)
    metrics = tmp_path / "runs" / "trends:more_data" / "evaluation" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"config_sha256": "', '"config_sha256": "0'))
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append)
    assert calls == [("full", "trends:more_data"), ("sweep_study", "trends")]
    assert any("trends:more_data: running job full" in m and "made from another config" in m for m in log)


def test_sweep_runner_goes_on_after_a_failed_point_but_skips_the_study(config_dir, tmp_path):
    res, calls, log = env(tmp_path, config_dir), [], []
    assert not run_sweep("trends", fake_defs(res, calls, fail="trends:c_lf=3.0"), instance=None, log=log.append)
    assert calls == [("full", p) for p in POINTS]
    assert "1 point(s) failed (trends:c_lf=3.0); study not materialised" in log[-1]


def test_sweep_runner_keeps_committed_results_that_outlive_the_machine(config_dir, tmp_path):
    """Finished points go to results/; a fresh machine (no runs) skips them; a changed config does not."""
    res, calls, log = env(tmp_path, config_dir), [], []
    results, report = tmp_path / "results", tmp_path / "report"
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append, results_dir=str(results),
                     report_dir=str(report))
    assert calls == [("full", p) for p in POINTS]  # the report replaces the history-based study
    assert sorted(p.name for p in results.iterdir()) == ["c_lf=1.3", "c_lf=3.0", "more_data", "normal_prior"]
    assert (report / "table.md").is_file()

    shutil.rmtree(tmp_path / "runs")  # a fresh machine: no checkpoints, no evaluations
    calls.clear()
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append, results_dir=str(results),
                     report_dir=str(report))
    assert calls == []
    assert any(m.startswith("[1/4] trends:c_lf=1.3: committed result") for m in log)

    sweep_file = config_dir / "experiments" / "trends.yaml"
    sweep_file.write_text(sweep_file.read_text().replace("normal_prior: {stage1.prior: normal}",
                                                         "normal_prior: {stage1.prior: normal, stage1.bias: 1.0}"))
    calls.clear()
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append, results_dir=str(results),
                     report_dir=str(report))
    assert calls == [("full", "trends:normal_prior")]
    assert any("trends:normal_prior: config differs in stage1" in m for m in log)


def test_sweep_runner_runs_only_the_named_points_and_no_study(config_dir, tmp_path):
    """Two processes can split a sweep: each runs its points, neither makes the study; a typo is refused."""
    res, calls, log = env(tmp_path, config_dir), [], []
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append,
                     only=["more_data", "c_lf=1.3"])
    assert calls == [("full", "trends:c_lf=1.3"), ("full", "trends:more_data")]  # the sweep's order, no study
    calls.clear()
    assert run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append)
    assert calls == [("full", "trends:c_lf=3.0"), ("full", "trends:normal_prior"), ("sweep_study", "trends")]
    with pytest.raises(ConfigError, match="no point.*c_lf=9.*its points: c_lf=1.3"):
        run_sweep("trends", fake_defs(res, calls), instance=None, log=log.append, only=["c_lf=9"])
