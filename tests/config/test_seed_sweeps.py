"""Paired training seeds in a sweep: expansion, rate targets from the UL point's committed result, the runner
(order, waiting, resume, --commit) and the report rebuilt from committed results alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import assets.sweep_runner as runner
from assets.artifacts import resolve
from tests.config.test_sweeps import REPO, FakeJob, env
from ul_pipeline.config import ConfigError, load_config
from ul_pipeline.config.sweeps import load_sweep
from ul_pipeline.evaluation import statistics

SWEEP = """\
data: {limit: 150, val_size: 30, shard_size: 50}
stage1: {preset: tiny, c_lf: 2.0}
stage2: {preset: tiny}
sweep:
  variants:
    ul: {stage1.c_lf: 3.0}
    np: {stage1.prior: normal, stage1.encoder_noise: learned, stage1.target_bits_per_pixel: 0.0987}
    ul_seed1: {stage1.c_lf: 3.0, stage1.train.seed: 1, stage2.train.seed: 1}
  seeds:
    n: 4
    arms: [ul, np]
    rate_of: {np: ul}
    results: results/study
  paired:
    - [ul, np, "rate-matched"]
"""
ORDER = ["ul", "np", "ul_seed1", "np_seed1", "ul_seed2", "np_seed2", "ul_seed3", "np_seed3"]
REFERENCE = np.random.default_rng(0).normal(size=(80, 8))


@pytest.fixture
def root(tmp_path) -> Path:
    """A repository-like folder: configs/ with the `study` sweep; results/ beside it."""
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "base.yaml", configs / "base.yaml")
    (configs / "experiments" / "study.yaml").write_text(SWEEP)
    return tmp_path


def write_result(results: Path, label: str, bits_per_pixel: float) -> None:
    (results / label).mkdir(parents=True, exist_ok=True)
    (results / label / "result.json").write_text(json.dumps({"metrics": {"bits_per_pixel": bits_per_pixel}}))


def test_seeds_expand_per_arm_with_both_stage_seeds_and_existing_repeats_counted(root):
    sweep = load_sweep("study", root / "configs")
    assert [p.label for p in sweep.points] == ["ul", "np", "ul_seed1", "np_seed1", "ul_seed2", "np_seed2",
                                               "ul_seed3", "np_seed3"]
    by = {p.label: p for p in sweep.points}
    assert by["ul_seed1"].overrides == {"stage1.c_lf": 3.0, "stage1.train.seed": 1, "stage2.train.seed": 1}
    assert by["ul_seed3"].overrides == {"stage1.c_lf": 3.0, "stage1.train.seed": 3, "stage2.train.seed": 3}
    assert by["np_seed2"].waits_for == "ul_seed2" and "stage1.target_bits_per_pixel" not in by["np_seed2"].overrides
    assert sweep.seeds.paired == (("ul", "np", "rate-matched"),) and sweep.seeds.seeds_of("np")[2] == "np_seed2"
    with pytest.raises(ConfigError, match="np_seed2' takes its rate target from ul_seed2's committed result"):
        load_config("study:np_seed2", config_dir=root / "configs")

    write_result(root / "results" / "study", "ul_seed2", 0.31234)  # the UL point at seed 2 finished
    cfg = load_config("study:np_seed2", config_dir=root / "configs")
    assert cfg.stage1.target_bits_per_pixel == 0.312 and cfg.stage1.train.seed == 2 and cfg.stage2.train.seed == 2
    assert cfg.stage1.prior == "normal" and load_config("study:np", config_dir=root / "configs").stage1.train.seed == 0


@pytest.mark.parametrize("bad, match", [
    ("    n: 1\n", "seeds.n: need an integer >= 2"),
    ("    arms: [ul, nope]\n", "seeds.arms: a list of variants"),
    ("    rate_of: {np: nope}\n", "seeds.rate_of"),
])
def test_bad_seed_sections_are_refused_naming_the_key(root, bad, match):
    path = root / "configs" / "experiments" / "study.yaml"
    key = bad.split(":")[0].strip()
    lines = [ln for ln in SWEEP.splitlines(keepends=True) if not ln.startswith(f"    {key}:")]
    path.write_text("".join(lines).replace("  seeds:\n", "  seeds:\n" + bad))
    with pytest.raises(ConfigError, match=match):
        load_sweep("study", root / "configs")


class SeedJob(FakeJob):
    """A finished point also leaves its rate, KID and sample features: arm np is worse by a fixed shift, every
    seed shifts both arms alike (a common seed effect) and the samples of both arms share their noise row by row."""

    def execute_in_process(self, partition_key, instance, raise_on_error):
        out = super().execute_in_process(partition_key, instance, raise_on_error)
        if out.success:
            art = resolve(partition_key, **self.res)
            label = partition_key.split(":")[1]
            seed = int(label.split("_seed")[1]) if "_seed" in label else 0
            rng = np.random.default_rng(100 + seed)
            feats = rng.normal(size=(60, 8)) + abs(rng.normal(0, 0.1))  # shared by both arms at this seed
            own = np.random.default_rng(zlib.crc32(label.encode())).normal(0, 0.02, (60, 8))
            feats = feats + (0.5 if label.startswith("np") else 0.0) + own
            np.save(art.evaluation_dir / "generated_features.npy", feats.astype(np.float32))
            k = statistics.kid(REFERENCE, feats)
            metrics = json.loads((art.evaluation_dir / "metrics.json").read_text())
            metrics.update(bits_per_pixel=0.1 + 0.01 * seed, kid_train=k.value, kid_train_se=k.se,
                           sampler_precision="bf16" if seed < 2 else "fp32")  # machines without native bf16
            (art.evaluation_dir / "metrics.json").write_text(json.dumps(metrics))
        return out


def seed_defs(res, calls, **kwargs):
    from types import SimpleNamespace
    return SimpleNamespace(resources=res, resolve_job_def=lambda name: SeedJob(name, res, calls, **kwargs))


def test_runner_runs_seeds_in_order_resumes_commits_and_reports_from_committed_results(root, monkeypatch):
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for k, v in (("user.email", "t@t"), ("user.name", "t")):
        subprocess.run(["git", "-C", str(root), "config", k, v], check=True)
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    res, calls, log = env(root / "art", root / "configs"), [], []
    results, report = root / "results" / "study", root / "docs" / "study"
    with pytest.raises(ConfigError, match="--results is"):  # rates are read from the plan's folder only
        runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(root / "elsewhere"))

    with pytest.raises(KeyboardInterrupt):  # killed in the middle of seed 2's UL point
        runner.run_sweep("study", seed_defs(res, calls, kill_at="study:ul_seed2"), None, log.append,
                         results_dir=str(results), report_dir=str(report), commit=True)
    assert [c[1].split(":")[1] for c in calls] == ORDER[:5]
    calls.clear()
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results),
                            report_dir=str(report), commit=True)
    assert [c[1].split(":")[1] for c in calls] == ORDER[4:]  # resumed at the killed point
    assert json.loads((results / "np_seed3" / "result.json").read_text())["config"]["stage1"][
        "target_bits_per_pixel"] == 0.13  # ul_seed3's measured rate (0.1 + 0.03), not seed 0's 0.0987
    subjects = subprocess.run(["git", "-C", str(root), "log", "--format=%s"], capture_output=True, text=True,
                              check=True).stdout.split("\n")
    assert sum(s.endswith("committed result (sweep_runner --commit)") for s in subjects) == len(ORDER)

    seeds = json.loads((report / "seeds.json").read_text())
    (c,) = seeds["comparisons"]
    assert c["n"] == 4 and [r["seed"] for r in c["seeds"]] == [0, 1, 2, 3]
    assert [r["precision"] for r in c["seeds"]] == ["bf16", "bf16", "fp32", "fp32"]
    assert "2: " in (report / "seeds.md").read_text() and ", fp32" in (report / "seeds.md").read_text()
    assert c["verdict"].startswith("ul better") and c["interval"]["high"] < 0
    assert c["interval"]["high"] - c["interval"]["low"] < c["unpaired"]["high"] - c["unpaired"]["low"]
    assert (report / "paired_seeds.png").stat().st_size > 0 and "ul vs np" in (report / "seeds.md").read_text()
    assert "verdicts of this study are the paired-seed ones in [seeds.md](seeds.md)" in (
        report / "comparisons.md").read_text()  # its single-seed verdicts are not read as the study's

    shutil.rmtree(root / "art")  # a fresh clone: no runs, only the committed results
    (report / "seeds.json").unlink()
    calls.clear()
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results),
                            report_dir=str(report))
    assert calls == [] and json.loads((report / "seeds.json").read_text()) == seeds


def test_a_seed_point_whose_ul_point_failed_waits_and_the_sweep_reports_failure(root, monkeypatch):
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    res, calls, log = env(root / "art", root / "configs"), [], []
    assert not runner.run_sweep("study", seed_defs(res, calls, fail="study:ul_seed2"), None, log.append,
                                results_dir=str(root / "results" / "study"))
    assert "study:np_seed2" not in [c[1] for c in calls]
    assert any("np_seed2: waits for ul_seed2's committed result" in m for m in log)


def test_commit_result_takes_a_results_folder_relative_to_the_working_directory(tmp_path, monkeypatch):
    """The documented command passes `--results results/latent_study`; git runs in the folder's parent, where that
    relative path named nothing and the commit failed."""
    from types import SimpleNamespace

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for k, v in (("user.email", "t@t"), ("user.name", "t")):
        subprocess.run(["git", "-C", str(tmp_path), "config", k, v], check=True)
    (tmp_path / "results" / "study" / "p_seed1").mkdir(parents=True)
    (tmp_path / "results" / "study" / "p_seed1" / "result.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    log = []
    runner.commit_result("results/study", SimpleNamespace(label="p_seed1", key="study:p_seed1"), log.append)
    assert not any("WARNING" in line for line in log), log
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    assert tracked == ["results/study/p_seed1/result.json"]


def test_the_report_on_a_fresh_clone_writes_the_shard_set_and_caches_its_reference_features(root, monkeypatch):
    """--report-only on a fresh clone has no shard set: KID's training reference needs one, so it is written
    (as the dataset_shards asset writes it) and the reference features are computed once, then reused."""
    import ul_pipeline.evaluation.fid as fid
    from ul_pipeline.data import read_manifest

    seen = []

    class FakeFeatures:
        identity = "fake-network-v1"

        def __init__(self, device):
            pass

        def __call__(self, images, progress=None):
            seen.append(len(images))
            progress(len(images), len(images))
            return images.flatten(1)[:, :8].double().numpy()

    monkeypatch.setattr(fid, "InceptionFeatures", FakeFeatures)
    res, log = env(root / "art", root / "configs", ["eval.kid_reference_size=100"]), []
    sweep = load_sweep("study", root / "configs")
    reference = runner.training_reference(sweep, res["storage"], res["experiment_config"], res["compute"], log.append)
    art = resolve(sweep.points[0].key, res["storage"], res["experiment_config"], res["compute"])
    manifest = read_manifest(art.shards_url)
    assert manifest.num_samples("train") == 120 and reference.shape == (100, 8) and seen == [100]
    assert any(m.startswith("no shard set at") for m in log) and any("reference features of 100" in m for m in log)
    again = runner.training_reference(sweep, res["storage"], res["experiment_config"], res["compute"], log.append)
    assert seen == [100] and np.array_equal(again, reference)  # cached beside the shards, not recomputed


@pytest.mark.parametrize("entries, match", [
    ('    - [ul, np, "rate-matched"]\n    - [ul, np, "again"]\n', r"paired.*\[ul, np\] is listed twice"),
    ('    - [ul, np, "rate-matched"]\n    - [np, ul, "reversed"]\n', r"paired.*\[np, ul\] is listed twice"),
    ('    - [ul, ul, "itself"]\n', r"paired.*\[ul, ul\] compares a point with itself"),
])
def test_a_repeated_or_self_paired_comparison_is_refused(root, entries, match):
    """A pair listed twice used to give two identical rows in seeds.md; a point against itself a zero difference."""
    path = root / "configs" / "experiments" / "study.yaml"
    path.write_text(SWEEP.replace('    - [ul, np, "rate-matched"]\n', entries))
    with pytest.raises(ConfigError, match=match):
        load_sweep("study", root / "configs")


@pytest.mark.parametrize("paired, match", [
    ('    - [[ul], np, "nested"]\n', r"paired.*not points of this sweep"),  # was a bare TypeError (unhashable)
    ('    - [{ul: 1}, np, "a mapping"]\n', r"paired.*not points of this sweep"),
])
def test_a_pair_naming_a_list_or_mapping_is_a_config_error(root, paired, match):
    path = root / "configs" / "experiments" / "study.yaml"
    path.write_text(SWEEP.replace('    - [ul, np, "rate-matched"]\n', paired))
    with pytest.raises(ConfigError, match=match) as e:
        load_sweep("study", root / "configs")
    assert str(path) in str(e.value)


def test_a_comparison_list_given_as_a_single_pair_or_a_mapping_says_so(root):
    """`paired: ul` used to be read letter by letter ("got 'u'"); a mapping key by key."""
    path = root / "configs" / "experiments" / "study.yaml"
    for value in ("ul", "{ul: np}"):
        path.write_text(SWEEP.replace('\n    - [ul, np, "rate-matched"]\n', f" {value}\n"))
        with pytest.raises(ConfigError, match=r"paired.*a list of \[a, b, why\] entries") as e:
            load_sweep("study", root / "configs")
        assert str(path) in str(e.value)
