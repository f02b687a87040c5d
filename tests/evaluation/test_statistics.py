"""KID/FID uncertainty: estimators against brute force, SEs against Monte Carlo, paired bootstrap CIs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ul_pipeline.evaluation import statistics as st

D = 16


def _gauss(rng: np.random.Generator, n: int, shift: float = 0.0, d: int = D) -> np.ndarray:
    return rng.normal(size=(n, d)) + shift


def test_polynomial_kernel_matches_formula_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    a, b = _gauss(rng, 23).astype(np.float32), _gauss(rng, 9)
    monkeypatch.setattr(st, "_BLOCK", 5)  # 23 rows -> 5 blocks, the last one partial
    k = st.polynomial_kernel(a, b)
    assert k.dtype == np.float64 and k.shape == (23, 9)
    np.testing.assert_allclose(k, (a.astype(np.float64) @ b.T / D + 1.0) ** 3, rtol=1e-12)


def test_kid_equals_brute_force_double_loop() -> None:
    rng = np.random.default_rng(1)
    real, gen = _gauss(rng, 7, d=3), _gauss(rng, 5, 0.3, d=3)
    def k(x: np.ndarray, y: np.ndarray) -> float:
        return (x @ y / 3 + 1.0) ** 3

    m, n = len(gen), len(real)
    xx = sum(k(gen[i], gen[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(real[i], real[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(gen[i], real[j]) for i in range(m) for j in range(n)) / (m * n)
    est = st.kid(real, gen)
    assert est.value == pytest.approx(xx + yy - 2 * xy, rel=1e-12, abs=1e-12)
    assert (est.n_generated, est.n_reference) == (5, 7) and est.se > 0


def test_kid_se_matches_monte_carlo_spread() -> None:
    rng = np.random.default_rng(2)
    runs = [st.kid(_gauss(rng, 200), _gauss(rng, 150, 0.3)) for _ in range(200)]
    spread = np.std([r.value for r in runs], ddof=1)
    assert np.mean([r.se for r in runs]) == pytest.approx(spread, rel=0.25)


def test_kid_near_zero_for_one_distribution_and_positive_when_shifted() -> None:
    rng = np.random.default_rng(3)
    real = _gauss(rng, 400)
    same, shifted = st.kid(real, _gauss(rng, 300)), st.kid(real, _gauss(rng, 300, 0.5))
    assert abs(same.value) < 3 * same.se
    assert shifted.value > 3 * shifted.se


def test_weighted_replicate_terms_equal_index_copies() -> None:
    """The multinomial-weight formulas equal the resampled index copies (same-row pairs dropped)."""
    rng = np.random.default_rng(4)
    m, n = 6, 5
    kxx, kxy = st.polynomial_kernel(g := _gauss(rng, m), g), st.polynomial_kernel(g, _gauss(rng, n))
    w, v = st._counts(rng, m, 1), st._counts(rng, n, 1)
    idx, jdx = np.repeat(np.arange(m), w[0].astype(int)), np.repeat(np.arange(n), v[0].astype(int))
    pairs = [(i, j) for i, j in itertools.product(idx, idx) if i != j]  # positions of distinct rows
    brute_within = np.mean([kxx[i, j] for i, j in pairs])
    assert st._within(w, kxx)[0] / (m * m - (w * w).sum()) == pytest.approx(brute_within, rel=1e-12)
    assert st._cross(w, kxy, v)[0] / (m * n) == pytest.approx(kxy[np.ix_(idx, jdx)].mean(), rel=1e-12)


def test_weighted_fid_equals_fid_of_repeated_rows() -> None:
    rng = np.random.default_rng(5)
    real, gen = _gauss(rng, 60, d=8), _gauss(rng, 40, 0.2, d=8)
    ref, w = st._FidReference(real), st._counts(rng, 40)
    resampled = np.repeat(gen, w.astype(int), axis=0)
    assert ref.fid(gen, gen @ ref.root, w) == pytest.approx(st.fid(real, resampled), rel=1e-9)


def _brute_fid(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eig(sa @ sb)[0]  # eigenvalues of S_a S_b are real, >= 0 up to round-off
    tr_sqrt = np.sqrt(np.clip(eig.real, 0.0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt)


@pytest.mark.parametrize("m", [50, 6])  # d x d Gram path, then the m x m Gram path (m < d)
def test_fid_fast_formula_equals_brute_force(m: int) -> None:
    rng = np.random.default_rng(6)
    real, gen = _gauss(rng, 50, d=8), 1.3 * _gauss(rng, m, 0.4, d=8)
    assert st.fid(real, gen) == pytest.approx(_brute_fid(real, gen), rel=1e-6)


def test_paired_kid_difference_covers_zero_for_one_distribution() -> None:
    rng = np.random.default_rng(7)
    iv = st.paired_bootstrap_kid_difference(_gauss(rng, 400), _gauss(rng, 300), _gauss(rng, 300), n_boot=500)
    assert st.bootstrap_ci_covers(iv, 0.0) and not iv.excludes(0.0)
    assert iv.low <= iv.estimate <= iv.high and (iv.level, iv.n_boot, iv.method) == (0.95, 500, "percentile")


def test_paired_kid_difference_excludes_zero_when_shifted() -> None:
    rng = np.random.default_rng(8)
    gen_a = _gauss(rng, 300)
    iv = st.paired_bootstrap_kid_difference(_gauss(rng, 400), gen_a, gen_a + 0.5, n_boot=500)
    assert iv.excludes(0.0) and iv.high < 0  # a (unshifted) is the better one


def test_paired_fid_difference_covers_zero_for_one_distribution_and_excludes_it_when_shifted() -> None:
    rng = np.random.default_rng(9)
    real, gen_a = _gauss(rng, 1000), _gauss(rng, 300)
    same = st.paired_bootstrap_fid_difference(real, gen_a, _gauss(rng, 300))
    shifted = st.paired_bootstrap_fid_difference(real, gen_a, gen_a + 0.5)
    assert st.bootstrap_ci_covers(same) and same.method == "basic" and same.n_boot == 200
    assert shifted.excludes(0.0) and shifted.high < 0


def test_basic_interval_reflects_percentile_interval() -> None:
    rng = np.random.default_rng(10)
    real, gen_a, gen_b = _gauss(rng, 300), _gauss(rng, 100), _gauss(rng, 100, 0.1)
    pct = st.paired_bootstrap_fid_difference(real, gen_a, gen_b, n_boot=50, method="percentile")
    basic = st.paired_bootstrap_fid_difference(real, gen_a, gen_b, n_boot=50, method="basic")
    assert basic.low == pytest.approx(2 * pct.estimate - pct.high)
    assert basic.high == pytest.approx(2 * pct.estimate - pct.low)


@pytest.mark.parametrize("fn", [st.paired_bootstrap_kid_difference, st.paired_bootstrap_fid_difference])
def test_pairing_narrows_the_interval_under_shared_noise(fn) -> None:
    rng = np.random.default_rng(11)
    real, gen_a = _gauss(rng, 400), _gauss(rng, 300)
    gen_b = gen_a + 0.05 * rng.normal(size=gen_a.shape)  # same initial noise, small change
    paired = fn(real, gen_a, gen_b, n_boot=200)
    unpaired = fn(real, gen_a, gen_b, n_boot=200, paired=False)
    assert paired.high - paired.low < 0.5 * (unpaired.high - unpaired.low)


def test_bootstrap_is_seeded_and_validates_inputs() -> None:
    rng = np.random.default_rng(12)
    real, gen_a, gen_b = _gauss(rng, 50), _gauss(rng, 40), _gauss(rng, 40)
    first = st.paired_bootstrap_kid_difference(real, gen_a, gen_b, n_boot=30, seed=3)
    assert first == st.paired_bootstrap_kid_difference(real, gen_a, gen_b, n_boot=30, seed=3)
    with pytest.raises(ValueError):
        st.paired_bootstrap_kid_difference(real, gen_a, gen_b[:30])
    with pytest.raises(ValueError):
        st.kid(real, _gauss(rng, 40, d=D + 1))
    with pytest.raises(ValueError):
        st.paired_bootstrap_fid_difference(real, gen_a, gen_b, n_boot=10, level=1.5)
