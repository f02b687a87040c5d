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
