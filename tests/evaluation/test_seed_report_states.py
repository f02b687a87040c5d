"""The seed report in the states a running study passes through: a seed with one arm committed and its partner
not yet, arms of one seed run at different precisions or on different machines, a gap in the seeds."""

from __future__ import annotations

import json
import zlib

import numpy as np

from ul_pipeline.config.seeds import SeedPlan
from ul_pipeline.evaluation import seed_report, statistics
from ul_pipeline.evaluation.results import CommittedResult

REFERENCE = np.random.default_rng(0).normal(size=(80, 8))
PLAN = SeedPlan(6, ("ul", "np"), (("ul", "np", "rate-matched"),))
EPYC = {"cpu": "AMD EPYC 7B13", "torch_cpu_capability": "AVX2", "avx512_bf16": False, "amx_bf16": False, "gpu": None}
XEON = {"cpu": "Intel Xeon", "torch_cpu_capability": "AVX512", "avx512_bf16": True, "amx_bf16": False, "gpu": None}


def committed(folder, label, seed, precision="fp32", machine=None) -> CommittedResult:
    """A committed point: np worse by a fixed shift, both arms of a seed sharing their sample noise."""
    feats = np.random.default_rng(100 + seed).normal(size=(60, 8)) + (0.5 if label.startswith("np") else 0.0)
    feats = feats + np.random.default_rng(zlib.crc32(label.encode())).normal(0, 0.02, (60, 8))
    (folder / label).mkdir(parents=True)
    np.save(folder / label / "generated_features.npy", feats)
    k = statistics.kid(REFERENCE, feats)
    record = {"metrics": {"kid_train": k.value, "kid_train_se": k.se, "bits_per_pixel": 0.1, "num_generated": 60,
                          "sampler_precision": precision}}
    if machine is not None:
        record["machine"] = machine
    (folder / label / "result.json").write_text(json.dumps(record))
    return CommittedResult(folder / label, record)


def test_a_seed_with_one_arm_committed_is_left_out_and_named_as_waiting(tmp_path):
    results = {}
    for s in (0, 1, 2, 3, 4):  # seed 3: the UL arm is in, its partner not yet; seed 5: neither
        results[PLAN.label("ul", s)] = committed(tmp_path, PLAN.label("ul", s), s)
        if s != 3:
            results[PLAN.label("np", s)] = committed(tmp_path, PLAN.label("np", s), s)
    summary = seed_report.write_seed_report(PLAN, results, REFERENCE, tmp_path / "report")
    (c,) = summary["comparisons"]
    assert [r["seed"] for r in c["seeds"]] == [0, 1, 2, 4]  # a gap: seed numbers kept, only complete seeds paired
    assert c["waiting"] == ["seed 3 waits for np_seed3"]
    assert "np_seed3" in c["verdict"] and c["verdict"].startswith("provisional (4 of 6 seeds")
    assert "seed 3 waits for np_seed3" in (tmp_path / "report" / "seeds.md").read_text()


def test_a_seed_whose_arms_ran_at_different_precisions_or_machines_says_which_arm_ran_where(tmp_path):
    results = {}
    for s in range(3):
        la, lb = PLAN.label("ul", s), PLAN.label("np", s)
        results[la] = committed(tmp_path, la, s, "fp32" if s == 1 else "bf16", XEON)
        results[lb] = committed(tmp_path, lb, s, "bf16", EPYC if s == 2 else XEON)
    summary = seed_report.write_seed_report(PLAN, results, REFERENCE, tmp_path / "report")
    rows = summary["comparisons"][0]["seeds"]
    assert [r["precision"] for r in rows] == ["bf16", "fp32/bf16", "bf16"]  # a/b in arm order, not sorted
    assert rows[0]["machine"] == rows[1]["machine"] == "AVX512+bf16"
    assert rows[2]["machine"] == "AVX512+bf16/AVX2"
    md = (tmp_path / "report" / "seeds.md").read_text()
    assert "fp32/bf16" in md and "AVX512+bf16/AVX2" in md


def test_results_from_before_the_machine_was_recorded_show_no_machine(tmp_path):
    results = {PLAN.label(arm, s): committed(tmp_path, PLAN.label(arm, s), s) for arm in ("ul", "np") for s in (0, 1)}
    rows = seed_report.write_seed_report(PLAN, results, REFERENCE, tmp_path / "report")["comparisons"][0]["seeds"]
    assert [r["machine"] for r in rows] == [None, None]


def test_committed_seeds_beyond_a_lowered_n_are_named_not_silently_dropped(tmp_path):
    results = {PLAN.label(arm, s): committed(tmp_path, PLAN.label(arm, s), s) for arm in ("ul", "np") for s in range(6)}
    lowered = SeedPlan(5, PLAN.arms, PLAN.paired)  # n edited 6 -> 5 after seed 5 was seen: the sweep drops it
    kept = {k: v for k, v in results.items() if not k.endswith("_seed5")}
    summary = seed_report.write_seed_report(lowered, kept, REFERENCE, tmp_path / "report", committed=list(results))
    (c,) = summary["comparisons"]
    assert c["n"] == 5 and c["beyond_n"] == ["ul_seed5", "np_seed5"]
    assert "committed beyond n = 5, not judged: ul_seed5, np_seed5" in c["verdict"]
    assert "ul_seed5" in (tmp_path / "report" / "seeds.md").read_text()
