"""The paired-seed rule: coverage of its interval, its width against the unpaired one, power and wording."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ul_pipeline.evaluation import paired_seeds as ps
from ul_pipeline.evaluation import statistics as st

LEVEL = 0.95


def synthetic_seeds(rng: np.random.Generator, n: int, delta: float, shift_sd: float, pair_sd: float,
                    within_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KID of arms a and b over n paired seeds: a common seed shift (both arms), an arm-specific seed
    effect and a sampling error; returns (kid_a, kid_b, within SE of each paired difference)."""
    shift = rng.normal(0.0, shift_sd, n)  # what a training seed does to both families alike
    kid_b = 0.02 + shift + rng.normal(0.0, pair_sd / math.sqrt(2), n)
    kid_a = 0.02 + delta + shift + rng.normal(0.0, pair_sd / math.sqrt(2), n)
    kid_a += rng.normal(0.0, within_sd, n)  # sampling error of the paired difference, put on one arm
    return kid_a, kid_b, np.full(n, within_sd)


def binomial_tolerance(p: float, reps: int, z: float = 3.5) -> float:
    """z standard errors of a coverage fraction over `reps` independent replicates."""
    return z * math.sqrt(p * (1 - p) / reps)


@pytest.mark.parametrize("n", [4, 6])
def test_interval_covers_the_family_difference_at_the_nominal_rate(n):
    # the seed shift (3e-3) is as large as the study's raw seed spread; the difference's own seed
    # noise (1e-3) dominates the sampling error (3e-4), so the interval's max() rarely acts
    rng, reps, delta = np.random.default_rng(0), 4000, 1.0e-3
    covered = 0
    for _ in range(reps):
        a, b, w = synthetic_seeds(rng, n, delta, shift_sd=3e-3, pair_sd=1e-3, within_sd=3e-4)
        covered += not ps.paired_seed_interval(a - b, w, LEVEL).excludes(delta)
    assert abs(covered / reps - LEVEL) <= binomial_tolerance(LEVEL, reps), covered / reps


def test_interval_is_never_below_nominal_when_the_sampling_error_dominates():
    # seeds that agree by chance cannot shrink the interval below the sampling error: coverage >= 95%
    rng, reps, delta = np.random.default_rng(1), 4000, -2.0e-3
    covered = sum(not ps.paired_seed_interval(a - b, w, LEVEL).excludes(delta)
                  for a, b, w in (synthetic_seeds(rng, 4, delta, 3e-3, 2e-4, 8e-4) for _ in range(reps)))
    assert covered / reps >= LEVEL - binomial_tolerance(LEVEL, reps)


def test_paired_interval_is_narrower_than_the_unpaired_one_under_a_common_seed_shift():
    rng, ratios, unpaired_covered, reps = np.random.default_rng(2), [], 0, 500
    for _ in range(reps):
        a, b, w = synthetic_seeds(rng, 6, 1e-3, shift_sd=3e-3, pair_sd=5e-4, within_sd=3e-4)
        paired, unpaired = ps.paired_seed_interval(a - b, w), ps.unpaired_seed_interval(a, b)
        assert paired.estimate == pytest.approx(unpaired.estimate)  # same point, different noise
        ratios.append((paired.high - paired.low) / (unpaired.high - unpaired.low))
        unpaired_covered += not unpaired.excludes(1e-3)
    assert np.median(ratios) < 0.25 and max(ratios) < 1.0
    assert unpaired_covered / reps >= LEVEL - binomial_tolerance(LEVEL, reps)  # valid, only wide


def test_interval_closed_form():
    d, w = [1e-3, 2e-3, 3e-3, 6e-3], [1e-4] * 4
    i = ps.paired_seed_interval(d, w)
    sd = np.std(d, ddof=1)
    assert i.estimate == pytest.approx(3e-3) and i.se == pytest.approx(sd / 2)
    assert i.high - i.estimate == pytest.approx(3.182446305 * sd / 2, rel=1e-8)  # t_{3, 0.975}
    # seeds that agree exactly: the interval is the sampling error's
    j = ps.paired_seed_interval([1e-3] * 4, [4e-4] * 4)
    assert j.se == pytest.approx(2e-4) and j.low == pytest.approx(1e-3 - 3.182446305 * 2e-4, rel=1e-8)
    with pytest.raises(ValueError, match="need >= 2 finite"):
        ps.paired_seed_interval([1e-3])
    with pytest.raises(ValueError, match="need 3 standard errors"):
        ps.paired_seed_interval([1e-3, 2e-3, 3e-3], [1e-4])


def test_power_and_minimum_detectable_difference():
    mdd = ps.minimum_detectable_difference(1e-3, 6)
    assert ps.power(mdd, 1e-3, 6) == pytest.approx(ps.POWER, abs=1e-6)
    assert ps.power(0.0, 1e-3, 6) == pytest.approx(1 - LEVEL, abs=1e-9)  # the test's size
    # many seeds: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n)
    assert ps.minimum_detectable_difference(1.0, 2000) == pytest.approx((1.959964 + 0.841621) / math.sqrt(2000),
                                                                        rel=2e-3)
    assert ps.minimum_detectable_difference(1.0, 4) > ps.minimum_detectable_difference(1.0, 8)
    # by simulation at n = 4: the interval excludes 0 in ~80% of replicates at delta = mdd (no sampling error)
    rng, n, reps = np.random.default_rng(3), 4, 4000
    mdd = ps.minimum_detectable_difference(1.0, n)
    hits = sum(ps.paired_seed_interval(rng.normal(mdd, 1.0, n)).excludes(0.0) for _ in range(reps))
    assert abs(hits / reps - ps.POWER) <= binomial_tolerance(ps.POWER, reps)


def test_verdict_wording():
    win = ps.paired_seed_interval([-3e-3, -2e-3, -2.5e-3, -2.2e-3])
    assert ps.verdict("ul_c6", "np_c6", win, 1e-3).startswith("ul_c6 better: KID(ul_c6) - KID(np_c6) = -2.43e-03")
    lose = ps.paired_seed_interval([3e-3, 2e-3, 2.5e-3, 2.2e-3])
    assert ps.verdict("ul_c6", "np_c6", lose, 1e-3).startswith("np_c6 better")
    tie = ps.paired_seed_interval([-1e-3, 1e-3, 0.5e-3, -0.2e-3])
    assert ps.verdict("ul_c6", "np_c6", tie, 1.23e-3).startswith("no detectable difference, smaller than 1.23e-03")


def test_paired_kid_difference_matches_kid_and_the_bootstrap():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(400, 8))
    noise = rng.normal(size=(300, 8))  # common random numbers: row i of a and b shares its noise
    a, b = noise + 0.25 + 0.3 * rng.normal(size=(300, 8)), noise + 0.15 + 0.3 * rng.normal(size=(300, 8))
    est, se = st.paired_kid_difference(real, a, b)
    assert est == pytest.approx(st.kid(real, a).value - st.kid(real, b).value, rel=1e-10)
    boot = st.paired_bootstrap_kid_difference(real, a, b, n_boot=400, seed=0)
    boot_se = (boot.high - boot.low) / (2 * 1.959964)
    assert se == pytest.approx(boot_se, rel=0.25)
    ka, kb = st.kid(real, a), st.kid(real, b)
    assert se < 0.7 * math.hypot(ka.se, kb.se)  # the pairing removes the shared sampling noise
