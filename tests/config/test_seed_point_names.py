"""A variant named like a seed point (`<arm>_seed<s>`, s < n) stands for that arm at study seed s in every paired
comparison, so it must train at that seed: one that does not (a copy of the arm without its seed keys, or a typo)
would be paired as seed s while repeating another seed's training."""

from __future__ import annotations

import pytest

from tests.config.test_seed_sweeps import SWEEP, root  # noqa: F401 (root: the fixture)
from ul_pipeline.config import ConfigError
from ul_pipeline.config.sweeps import load_sweep

GOOD = "    ul_seed1: {stage1.c_lf: 3.0, stage1.train.seed: 1, stage2.train.seed: 1}\n"


@pytest.mark.parametrize("variant, match", [
    ("    ul_seed1: {stage1.c_lf: 3.0}\n", r"ul_seed1 is ul at study seed 1.*stage1.train.seed = None"),
    ("    ul_seed1: {stage1.c_lf: 3.0, stage1.train.seed: 1, stage2.train.seed: 0}\n", r"stage2.train.seed.*0"),
    ("    ul_seed1: {stage1.c_lf: 3.0, stage1.train.seed: 2, stage2.train.seed: 2}\n", r"stage1.train.seed.*2"),
])
def test_a_variant_named_as_a_seed_point_must_train_at_that_seed(root, variant, match):  # noqa: F811
    (root / "configs" / "experiments" / "study.yaml").write_text(SWEEP.replace(GOOD, variant))
    with pytest.raises(ConfigError, match=match):
        load_sweep("study", root / "configs")


def test_a_variant_beyond_the_planned_seeds_is_an_ordinary_variant(root):  # noqa: F811
    text = SWEEP.replace(GOOD, GOOD + "    ul_seed7: {stage1.c_lf: 3.0}\n")
    (root / "configs" / "experiments" / "study.yaml").write_text(text)
    labels = [p.label for p in load_sweep("study", root / "configs").points]
    assert "ul_seed7" in labels and labels.count("ul_seed1") == 1


@pytest.mark.parametrize("arm", ["ul_c6", "np", "a_seed"])
def test_a_seed_label_parses_back_to_its_arm_and_seed(arm):
    """`arm_and_seed` is `SeedPlan.label`'s inverse: the report and the plots group points by it."""
    from ul_pipeline.config.seeds import SeedPlan, arm_and_seed

    plan = SeedPlan(6, (arm,), ())
    assert [arm_and_seed(plan.label(arm, s)) for s in range(6)] == [(arm, s) for s in range(6)]
