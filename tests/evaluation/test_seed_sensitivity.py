"""scripts/latent_study_sensitivity.py: leave-one-seed-out and per-machine intervals use the rule's own interval."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ul_pipeline.evaluation.paired_seeds import paired_seed_interval

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "latent_study_sensitivity.py"


@pytest.fixture(scope="module")
def sensitivity():
    spec = importlib.util.spec_from_file_location("latent_study_sensitivity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed(s: int, d: float, machine=None) -> dict:
    return {"seed": s, "difference": d, "within_se": 0.5e-3, "machine": machine}


def test_one_seed_carries_the_verdict_and_the_machine_groups_are_split(sensitivity, tmp_path):
    """Four seeds near 0 and one far below: without that seed the interval covers 0; the AVX2 pair is its group."""
    seeds = [seed(0, 0.4e-3), seed(1, -0.3e-3), seed(2, 0.1e-3), seed(3, -6e-3, "AVX2"), seed(4, -5.8e-3, "AVX2")]
    rows = dict(sensitivity.rows({"a": "u", "b": "v", "seeds": seeds}))
    full = paired_seed_interval([s["difference"] for s in seeds], [0.5e-3] * 5)
    assert rows["all 5 seeds"].startswith(f"{full.estimate * 1e3:+.2f} [{full.low * 1e3:+.2f}")
    assert rows["without seed 3 (-6.00)"].endswith("covers 0")
    assert rows["machine AVX2: seeds 3, 4"].endswith("below 0")
    assert rows["machine not recorded, or arms differ: seeds 0, 1, 2"].endswith("covers 0")

    (tmp_path / "seeds.json").write_text(json.dumps({"comparisons": [{"a": "u", "b": "v", "seeds": seeds[:3]}]}))
    text = sensitivity.markdown(json.loads((tmp_path / "seeds.json").read_text()), "seeds.json")
    assert "## u vs v" in text and "machine" not in text.split("## u vs v")[1]  # one group: no split rows


def test_seeds_whose_arms_ran_on_different_machines_join_the_rest(sensitivity):
    """The report writes 'AVX2/?' or 'AVX2/AVX512' when the arms differ; the page's label says those seeds are in
    the 'not recorded, or arms differ' group, so they must not form a group of their own."""
    seeds = [seed(0, 0.4e-3), seed(1, -0.3e-3, "AVX2/?"), seed(2, -6e-3, "AVX2"), seed(3, -5.8e-3, "AVX2"),
             seed(4, 0.1e-3, "AVX2/AVX512")]
    names = [name for name, _ in sensitivity.rows({"a": "u", "b": "v", "seeds": seeds})]
    assert [n for n in names if n.startswith("machine")] == [
        "machine not recorded, or arms differ: seeds 0, 1, 4", "machine AVX2: seeds 2, 3"]


def test_a_subset_without_any_measured_noise_is_a_cell_not_a_crash(sensitivity):
    """Two seeds left that agree exactly with no within-seed SE: the rule's interval refuses them (ValueError)."""
    seeds = [dict(seed(s, d), within_se=0.0) for s, d in ((0, 1e-3), (1, 1e-3), (2, 2e-3))]
    rows = dict(sensitivity.rows({"a": "u", "b": "v", "seeds": seeds}))
    assert rows["without seed 2 (+2.00)"] == "(no interval: no noise measured)"
    assert rows["all 3 seeds"].startswith("+1.33 [")


@pytest.mark.parametrize("text, what", [
    (None, "cannot read"), ("{not json", "not valid JSON"), ("[]", "comparisons"), ('{"points": []}', "comparisons"),
    ('{"comparisons": [{"a": "u", "b": "v", "seeds": [{"seed": 0}, {"seed": 1}]}]}', "difference"),
    ('{"comparisons": [{"a": "u", "b": "v", "seeds": [{"seed": 0, "difference": null, "within_se": 0.1}]}]}',
     "difference"),
    ('{"comparisons": [{"a": "u", "b": "v", "seeds": [{"seed": 0, "difference": 0.1, "within_se": -1}]}]}',
     "within_se"),
])
def test_a_broken_seeds_json_is_an_error_naming_it_and_leaves_the_page(sensitivity, tmp_path, text, what):
    path, out = tmp_path / "seeds.json", tmp_path / "sensitivity.md"
    if text is not None:
        path.write_text(text)
    out.write_text("the previous page\n")
    with pytest.raises(SystemExit, match=what) as e:
        sensitivity.main(["--seeds-json", str(path), "--out", str(out)])
    assert str(path) in str(e.value) and out.read_text() == "the previous page\n"


def test_an_unwritable_out_is_an_error_naming_it(sensitivity, tmp_path):
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"comparisons": [{"a": "u", "b": "v", "seeds": [seed(0, 1e-3), seed(1, 2e-3)]}]}))
    (tmp_path / "a_file").write_text("")
    for out in (tmp_path / "a_file" / "sensitivity.md", tmp_path):  # parent not a folder; a folder
        with pytest.raises(SystemExit, match="cannot write") as e:
            sensitivity.main(["--seeds-json", str(path), "--out", str(out)])
        assert str(out) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "seeds.json"]  # no temporary file left
    sensitivity.main(["--seeds-json", str(path), "--out", str(tmp_path / "ok.md")])
    assert "## u vs v" in (tmp_path / "ok.md").read_text()
