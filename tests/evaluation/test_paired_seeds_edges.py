"""The paired-seed statistic at its edges: no measured noise, bad arguments. Each answer is either a
clear ValueError or the closed form (checked by hand below), never a zero-width certainty, an inf or a NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ul_pipeline.config.seeds import SeedPlan
from ul_pipeline.evaluation import paired_seeds as ps
from ul_pipeline.evaluation import seed_report

T_1 = 12.706204736174707  # t_{1, 0.975}
T_2 = 4.302652729911275  # t_{2, 0.975}


def test_by_hand_three_seeds():
    # d = 1, 2, 3 (x1e-3): mean 2e-3, sd 1e-3, SE 1e-3 / sqrt(3); the within-seed SE (1e-4) is smaller, so unused
    i = ps.paired_seed_interval([1e-3, 2e-3, 3e-3], [1e-4] * 3)
    assert i.estimate == pytest.approx(2e-3) and i.se == pytest.approx(1e-3 / math.sqrt(3))
    assert (i.low, i.high) == pytest.approx((2e-3 - T_2 * 1e-3 / math.sqrt(3), 2e-3 + T_2 * 1e-3 / math.sqrt(3)))
    # MDD at n = 3, sd 1: power(mdd) = 0.8, and the normal approximation (z_.975 + z_.8) / sqrt(3) = 1.62 is far
    # too small at 2 degrees of freedom (the t quantile and its spread): the exact value is about twice it
    mdd = ps.minimum_detectable_difference(1.0, 3)
    assert ps.power(mdd, 1.0, 3) == pytest.approx(0.8, abs=1e-9) and 3.0 < mdd < 3.5


@pytest.mark.parametrize("within", [None, [0.0, 0.0]])
def test_seeds_that_agree_exactly_with_no_sampling_error_give_no_interval(within):
    """Two identical differences and no within-seed SE gave the interval [d, d] (SE 0) and the verdict 'b better:
    excludes 0' from two seeds; the report then died in the MDD (spread 0) without naming the comparison."""
    with pytest.raises(ValueError, match="no noise measured"):
        ps.paired_seed_interval([1e-3, 1e-3], within)
    ps.paired_seed_interval([1e-3, 1e-3], [1e-4, 0.0])  # one seed's sampling error is enough: an interval


def test_the_report_does_not_judge_a_comparison_whose_arms_are_identical():
    plan = SeedPlan(2, ("a", "b"), (("a", "b", "why"),))
    rows = [{"seed": s, "difference": 0.0, "within_se": 0.0, "kid_a": 0.02, "kid_b": 0.02, "kid_se_a": 0.0,
             "kid_se_b": 0.0} for s in range(2)]  # e.g. both arms' features are the same file
    out = seed_report.judge(plan, "a", "b", rows)
    assert out["verdict"].startswith("not judged: ") and "no noise measured" in out["verdict"]
    assert "interval" not in out  # so the power table and the plot leave it out


def test_the_unpaired_interval_checks_its_level():
    with pytest.raises(ValueError, match="level"):
        ps.unpaired_seed_interval([1.0, 2.0], [1.0, 3.0], level=2.0)  # was an interval of NaN


@pytest.mark.parametrize("call", [
    lambda: ps.power(float("nan"), 1.0, 3), lambda: ps.power(1.0, float("nan"), 3),
    lambda: ps.power(1.0, float("inf"), 3), lambda: ps.power(1.0, 1.0, 3, level=1.5),
    lambda: ps.minimum_detectable_difference(float("nan"), 3), lambda: ps.minimum_detectable_difference(math.inf, 3),
    lambda: ps.minimum_detectable_difference(1.0, 3, level=1.5), lambda: ps.minimum_detectable_difference(1.0, 2.5),
])
def test_bad_arguments_are_named_not_nan_or_a_solver_error(call):
    """power returned NaN for a NaN argument; the MDD failed inside brentq ('The function value at x=0.0 is NaN')."""
    with pytest.raises(ValueError, match="need "):
        call()


def test_power_far_out_is_one_not_nan():
    """scipy's noncentral t returns NaN past a noncentrality of ~1e10 (a gap 1e10 times the spread)."""
    assert ps.power(1e10, 1.0, 3) == 1.0 and ps.power(-1e12, 1.0, 8) == 1.0
