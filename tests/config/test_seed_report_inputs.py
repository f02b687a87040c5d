"""The study report against what users' clones hold: broken, stale or foreign committed results, and a report
run that dies half-way. A broken result stops the report naming its file, a stale one is left out and named,
and the last report stays whole (its files are replaced together, only when the new set is complete)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import assets.sweep_runner as runner
import ul_pipeline.evaluation.seed_report as seed_report
from tests.config.test_seed_sweeps import REFERENCE, root, seed_defs  # noqa: F401 (root: the fixture)
from tests.config.test_sweeps import env
from ul_pipeline.config.sweeps import load_sweep
from ul_pipeline.evaluation.results import ResultError
from ul_pipeline.versioning import json_sha256


@pytest.fixture
def study(root, monkeypatch):  # noqa: F811
    """A study whose 8 points are committed and reported: (report(), results folder, report folder, log)."""
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    res, log = env(root / "art", root / "configs"), []
    results, report = root / "results" / "study", root / "docs" / "study"
    assert runner.run_sweep("study", seed_defs(res, []), None, log.append, results_dir=str(results),
                            report_dir=str(report)), log
    resources = (res["storage"], res["experiment_config"], res["compute"])

    def write():
        log.clear()
        return runner.write_report(load_sweep("study", root / "configs"), str(results), str(report), resources,
                                   log.append)
    return write, results, report, log


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_report_killed_half_way_leaves_the_last_report_whole(study, monkeypatch):
    write, results, report, _ = study
    before = files(report)
    (results / "np_seed3" / "result.json").unlink()  # the next report differs: 3 paired seeds, not 4

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after table.md and the comparison's plots were made, before seeds.*

    monkeypatch.setattr(seed_report, "write_seed_report", killed)
    with pytest.raises(KeyboardInterrupt):
        write()
    assert files(report) == before  # not the new table beside the old seeds.json
    monkeypatch.undo()
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: REFERENCE)
    write()
    assert json.loads((report / "seeds.json").read_text())["comparisons"][0]["n"] == 3
    assert sorted(files(report)) == sorted(before)  # and no temporary files left beside them


def truncate(p):
    p.write_bytes(p.read_bytes()[:1000])


def change(fn):
    def edit(p):
        x = np.load(p)
        np.save(p, fn(x))
    return edit


def drop_kid(p):
    record = json.loads(p.read_text())
    del record["metrics"]["kid_train"]
    p.write_text(json.dumps(record))


BROKEN = [("generated_features.npy", truncate, "cannot be read"),
          ("generated_features.npy", change(lambda x: x[:, :7]),
           r"features of shape \(60, 7\), those of the other points \(60, 8\)"),
          ("generated_features.npy", change(lambda x: np.where(np.arange(len(x))[:, None] == 5, np.nan, x)),
           r"1 row\(s\) hold NaN or inf \(first: row 5\)"),
          ("generated_features.npy", change(lambda x: (100 * x).astype(np.int32)), "need a float array"),
          ("generated_features.npy", lambda p: p.unlink(), "cannot be read"),
          ("result.json", lambda p: p.write_text(p.read_text()[:50]), "not valid JSON"),
          ("result.json", drop_kid, "metrics lack kid_train")]


def test_a_broken_committed_result_stops_the_report_naming_its_file(study):
    write, results, report, _ = study
    before = files(report)
    for name, breaks, match in BROKEN:
        path = results / "np_seed2" / name
        good = path.read_bytes()
        breaks(path)
        with pytest.raises(ResultError, match=match) as e:
            write()
        assert str(path) in str(e.value) and files(report) == before, (name, match)
        path.write_bytes(good)


def test_a_stale_result_is_left_out_and_named_and_a_foreign_folder_is_named(study):
    write, results, report, log = study
    path = results / "np_seed2" / "result.json"
    record = json.loads(path.read_text())  # made from another rate target than the sweep's np_seed2 now has
    record["config"]["stage1"]["target_bits_per_pixel"] = 0.9
    record["config_sha256"] = json_sha256(record["config"])
    path.write_text(json.dumps(record))
    (results / "ul_seed9").mkdir()
    (results / "ul_seed9" / "result.json").write_text("{}")
    assert not write()  # not every point reported
    assert any(f"{results / 'np_seed2'} left out of the report, stale: config differs in stage1" in m for m in log)
    assert any("ul_seed9 in" in m and "no point of the sweep" in m for m in log)
    (c,) = json.loads((report / "seeds.json").read_text())["comparisons"]
    assert [r["seed"] for r in c["seeds"]] == [0, 1, 3] and "np_seed2" not in (report / "table.md").read_text()
