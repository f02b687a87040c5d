"""The seed sweep and its runner used the way real runs go wrong: a broken or stale rate source, a config edited
while a point trains, a runner killed between writing a result and committing it."""

from __future__ import annotations

import json
import subprocess

import pytest

import assets.sweep_runner as runner
from tests.config.test_seed_sweeps import REFERENCE, SeedJob, root, seed_defs  # noqa: F401 (root: a fixture)
from tests.config.test_sweeps import env
from ul_pipeline.config import ConfigError, load_config
from ul_pipeline.config.sweeps import load_sweep


def git_repo(path) -> None:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for k, v in (("user.email", "t@t"), ("user.name", "t")):
        subprocess.run(["git", "-C", str(path), "config", k, v], check=True)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1]", "no metrics.bits_per_pixel"),
    (json.dumps({"metrics": {}}), "no metrics.bits_per_pixel"),
    (json.dumps({"metrics": {"bits_per_pixel": None}}), "no metrics.bits_per_pixel"),
    (json.dumps({"metrics": {"bits_per_pixel": "0.3"}}), "no metrics.bits_per_pixel"),
    (json.dumps({"metrics": {"bits_per_pixel": 0}}), "not a rate"),  # 0 would silently mean "beta fixed"
    (json.dumps({"metrics": {"bits_per_pixel": float("nan")}}), "not a rate"),
])
def test_a_broken_rate_source_is_a_config_error_naming_its_file(root, text, match):
    """A malformed partner result raised a bare JSONDecodeError / KeyError / TypeError from every load of the sweep
    (naming no file, and the runner's CLI catches only ConfigError), and a rate of 0 became 'beta fixed'."""
    path = root / "results" / "study" / "ul_seed2" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_sweep("study", root / "configs")
    assert str(path) in str(e.value) and "ul_seed2" in str(e.value)


def test_a_seed_point_waits_while_its_rate_source_is_stale(root, monkeypatch):
    """np_seed3 takes its rate from ul_seed3's committed result; once ul's config changed, that result is stale (the
    report leaves it out), yet `--points np_seed3` trained np_seed3 at the stale rate, hours spent on a point that
    goes stale the moment ul_seed3 runs again."""
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    res, calls, log = env(root / "art", root / "configs"), [], []
    results = root / "results" / "study"
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results),
                            only=["ul_seed3"])
    sweep_file = root / "configs" / "experiments" / "study.yaml"
    sweep_file.write_text(sweep_file.read_text().replace("ul: {stage1.c_lf: 3.0}", "ul: {stage1.c_lf: 3.5}"))
    calls.clear()
    assert not runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results),
                                only=["np_seed3"])
    assert calls == [] and not (results / "np_seed3").exists()
    assert any("np_seed3: waits for ul_seed3" in m and "stale" in m and "c_lf" in m for m in log), log

    calls.clear()  # ul_seed3 runs again first (sweep order), then np_seed3 at ul_seed3's new rate
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results),
                            only=["np_seed3", "ul_seed3"])
    assert [c[1] for c in calls] == ["study:ul_seed3", "study:np_seed3"]


def test_a_result_is_not_exported_when_the_config_changed_while_its_point_ran(root, monkeypatch):
    """export_result re-resolved the point after its run and wrote the *new* config beside metrics computed under the
    old one, with that new config's hash: a committed result that stands for an experiment nobody ran. Here the
    partner's rate is re-committed by another runner while np_seed2 trains."""
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    res, calls, log = env(root / "art", root / "configs"), [], []
    results = root / "results" / "study"
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results),
                            only=["ul_seed2"])
    partner = results / "ul_seed2" / "result.json"

    class MovingTarget(SeedJob):
        def execute_in_process(self, partition_key, instance, raise_on_error):
            out = super().execute_in_process(partition_key, instance, raise_on_error)
            record = json.loads(partner.read_text())
            record["metrics"]["bits_per_pixel"] = 0.25  # ul_seed2 re-run elsewhere, at another rate
            partner.write_text(json.dumps(record))
            return out

    from types import SimpleNamespace
    defs = SimpleNamespace(resources=res, resolve_job_def=lambda name: MovingTarget(name, res, calls))
    assert not runner.run_sweep("study", defs, None, log.append, results_dir=str(results), only=["np_seed2"])
    assert not (results / "np_seed2" / "result.json").exists()
    assert any("np_seed2" in m and "not written" in m and "another config" in m for m in log), log
    assert load_config("study:np_seed2", config_dir=root / "configs").stage1.target_bits_per_pixel == 0.25


def test_a_result_left_uncommitted_by_a_killed_runner_is_committed_by_the_next_commit_run(root, monkeypatch):
    """Killed between writing a point's result and committing it, the rerun with --commit found the result standing,
    skipped the point and never committed it: the study's 'saved point by point' silently had a hole."""
    git_repo(root)
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    res, calls, log = env(root / "art", root / "configs"), [], []
    results = root / "results" / "study"
    real_commit = runner.commit_result

    def killed(results_dir, point, log):
        raise KeyboardInterrupt  # SIGKILL stand-in: the result is written, the commit never ran

    monkeypatch.setattr(runner, "commit_result", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results), commit=True,
                         only=["ul"])
    monkeypatch.setattr(runner, "commit_result", real_commit)
    calls.clear()
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir=str(results), commit=True,
                            only=["ul"])
    assert calls == []  # not run again: its result stands
    tracked = subprocess.run(["git", "-C", str(root), "ls-files", "results"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "results/study/ul/result.json" in tracked
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "results"], capture_output=True,
                           text=True, check=True).stdout
    assert dirty == ""


def test_commit_takes_only_the_point_folder_from_a_dirty_tree_with_relative_or_absolute_results(root, monkeypatch):
    """(held already) --commit with other staged and unstaged changes commits the point's folder alone, and a
    relative --results names the same folder as the absolute one."""
    git_repo(root)
    (root / "notes.txt").write_text("draft")
    (root / "staged.txt").write_text("staged")
    subprocess.run(["git", "-C", str(root), "add", "staged.txt"], check=True)
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    monkeypatch.chdir(root)
    res, calls, log = env(root / "art", root / "configs"), [], []
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append, results_dir="results/study",
                            commit=True, only=["ul"])
    assert runner.run_sweep("study", seed_defs(res, calls), None, log.append,
                            results_dir=str(root / "results" / "study"), commit=True, only=["ul"])
    assert [c[1] for c in calls] == ["study:ul"]  # the absolute path found the relative run's result
    files = subprocess.run(["git", "-C", str(root), "show", "--name-only", "--format=", "HEAD"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert files and all(f.startswith("results/study/ul/") for f in files)
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True,
                            check=True).stdout
    assert "A  staged.txt" in status and "?? notes.txt" in status  # left as they were
