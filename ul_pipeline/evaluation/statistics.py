"""KID and FID with uncertainty: U-statistic standard errors and paired bootstrap differences.

Numpy only. Features are float arrays of shape (n, d), e.g. d = 2048 Inception pool features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_BLOCK = 1024  # kernel rows computed at once
_BATCH = 100  # bootstrap replicates per matrix product


@dataclass(frozen=True)
class KidEstimate:
    """Unbiased KID (MMD^2_u) with its standard error and the two sample sizes."""

    value: float
    se: float
    n_generated: int
    n_reference: int


@dataclass(frozen=True)
class PairedInterval:
    """Point estimate of metric(a) - metric(b) with a bootstrap interval ('percentile' or 'basic')."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    method: str = "percentile"

    def excludes(self, value: float = 0.0) -> bool:
        """True if `value` lies outside [low, high]."""
        return not self.low <= value <= self.high


def bootstrap_ci_covers(interval: PairedInterval, value: float = 0.0) -> bool:
    """True if `value` lies inside [interval.low, interval.high]."""
    return not interval.excludes(value)


def _check(real: np.ndarray, *gens: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(x, dtype=np.float64) for x in (real, *gens)]
    if any(x.ndim != 2 or x.shape[0] < 2 for x in out) or len({x.shape[1] for x in out}) != 1:
        raise ValueError(f"need (n >= 2, d) arrays with one d, got {[x.shape for x in out]}")
    if len(out) == 3 and out[1].shape != out[2].shape:
        raise ValueError(f"paired samples need equal shapes, got {out[1].shape} and {out[2].shape}")
    return out


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's cubic kernel k(x, y) = (x.y / d + 1)^3 as a (len(a), len(b)) float64 matrix, in row blocks."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = np.empty((a.shape[0], b.shape[0]))
    for i in range(0, a.shape[0], _BLOCK):
        blk = a[i : i + _BLOCK] @ b.T
        blk /= a.shape[1]
        blk += 1.0
        out[i : i + _BLOCK] = blk**3
    return out


def kid(real: np.ndarray, generated: np.ndarray) -> KidEstimate:
    """Unbiased MMD^2_u over all samples (Binkowski et al. 2018, eq. 3) with a first-order U-statistic SE.

    With x_i generated (m) and y_j reference (n), the Hoeffding projections are
    h_X(x_i) = mean_{i' != i} k(x_i, x_i') - mean_j k(x_i, y_j),
    h_Y(y_j) = mean_{j' != j} k(y_j, y_j') - mean_i k(x_i, y_j); MMD^2_u = mean h_X + mean h_Y and
    Var ~ 4/m Var_i[h_X] + 4/n Var_j[h_Y] (Hoeffding 1948; Lee 1990, Sec. 2.2 / Thm 3.4.1, two-sample
    U-statistic of degree (2, 2)). When P = Q the statistic is degenerate and this SE is conservative.
    """
    y, x = _check(real, generated)
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    h_x = (kxx.sum(1) - np.diag(kxx)) / (m - 1) - kxy.mean(1)
    h_y = (kyy.sum(1) - np.diag(kyy)) / (n - 1) - kxy.mean(0)
    se = math.sqrt(4.0 / m * h_x.var(ddof=1) + 4.0 / n * h_y.var(ddof=1))
    return KidEstimate(value=float(h_x.mean() + h_y.mean()), se=se, n_generated=m, n_reference=n)


def paired_kid_difference(real: np.ndarray, gen_a: np.ndarray, gen_b: np.ndarray) -> tuple[float, float]:
    """KID(a) - KID(b) on paired rows (a_i, b_i) and its first-order U-statistic SE, without K_yy.

    As in `kid`, with the pair (a_i, b_i) as one observation: dh_X(i) = h_X^a(a_i) - h_X^b(b_i) and
    dh_Y(j) = -(mean_i k(a_i, y_j) - mean_i k(b_i, y_j)) (the reference-reference term cancels), so
    the difference is mean dh_X + mean dh_Y and Var ~ 4/m Var_i[dh_X] + 4/n Var_j[dh_Y]. This is one
    seed's sampling error of the paired difference, the within-seed part of the paired-seed rule.
    """
    y, a, b = _check(real, gen_a, gen_b)
    m, n = a.shape[0], y.shape[0]
    kaa, kbb = polynomial_kernel(a, a), polynomial_kernel(b, b)
    kay, kby = polynomial_kernel(a, y), polynomial_kernel(b, y)
    dh_x = ((kaa.sum(1) - np.diag(kaa)) - (kbb.sum(1) - np.diag(kbb))) / (m - 1) - (kay.mean(1) - kby.mean(1))
    dh_y = -(kay.mean(0) - kby.mean(0))
    se = math.sqrt(4.0 / m * dh_x.var(ddof=1) + 4.0 / n * dh_y.var(ddof=1))
    return float(dh_x.mean() + dh_y.mean()), se


def _within(w: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row of w (B, m): weighted sum over pairs of distinct source rows, w^T K w - sum_i w_i^2 K_ii."""
    return np.einsum("bi,bi->b", w @ k, w) - (w * w) @ np.diag(k)


def _cross(w: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per row: w^T K v for w (B, m), K (m, n), v (B, n)."""
    return np.einsum("bj,bj->b", w @ k, v)


def _interval(estimate: float, reps: np.ndarray, level: float, method: str) -> PairedInterval:
    if not 0.0 < level < 1.0 or method not in ("percentile", "basic"):
        raise ValueError(f"need 0 < level < 1 and method in ('percentile', 'basic'), got {level}, {method!r}")
    low, high = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    if method == "basic":  # reflect around the estimate: removes the bootstrap's own bias
        low, high = 2.0 * estimate - high, 2.0 * estimate - low
    return PairedInterval(float(estimate), float(low), float(high), float(level), int(reps.size), method)


def _counts(rng: np.random.Generator, n: int, size: int | None = None) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def paired_bootstrap_kid_difference(
    real: np.ndarray, gen_a: np.ndarray, gen_b: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95, paired: bool = True, method: str = "percentile",
) -> PairedInterval:
    """Bootstrap CI of KID(a) - KID(b), resampling rows i of gen_a and gen_b jointly (common noise/label).

    Replicates use multinomial counts w (generated rows, sum m) and v (reference rows, sum n): the
    within term sum_{i != j} w_i w_j K_ij / sum_{i != j} w_i w_j drops same-row pairs (the naive
    w^T K w - sum w_i K_ii keeps duplicates' K_ii, biasing every replicate by O(mean K_ii / m)); the
    cross term is w^T K_xy v / (mn). Both points share the reference resample, so the reference
    term cancels and K_yy is never formed. paired=False draws independent counts for a and b.
    """
    y, a, b = _check(real, gen_a, gen_b)
    m, n = a.shape[0], y.shape[0]
    if paired:  # both terms are linear in the kernel: keep only the differences
        kab = polynomial_kernel(a, a) - polynomial_kernel(b, b)
        kcross = np.empty((m, n))
        for i in range(0, m, _BLOCK):
            rows = slice(i, i + _BLOCK)
            kcross[rows] = polynomial_kernel(a[rows], y) - polynomial_kernel(b[rows], y)
    else:
        kaa, kbb, kay, kby = (polynomial_kernel(a, a), polynomial_kernel(b, b),
                              polynomial_kernel(a, y), polynomial_kernel(b, y))

    def diff(wa: np.ndarray, wb: np.ndarray, v: np.ndarray) -> np.ndarray:
        pairs_a, pairs_b = m * m - (wa * wa).sum(1), m * m - (wb * wb).sum(1)  # m(m-1) at w = 1
        if paired:
            return _within(wa, kab) / pairs_a - 2.0 * _cross(wa, kcross, v) / (m * n)
        within = _within(wa, kaa) / pairs_a - _within(wb, kbb) / pairs_b
        return within - 2.0 * (_cross(wa, kay, v) - _cross(wb, kby, v)) / (m * n)

    estimate = float(diff(np.ones((1, m)), np.ones((1, m)), np.ones((1, n)))[0])
    rng, reps = np.random.default_rng(seed), []
    for start in range(0, n_boot, _BATCH):
        size = min(_BATCH, n_boot - start)
        wa = _counts(rng, m, size)
        wb = wa if paired else _counts(rng, m, size)
        reps.append(diff(wa, wb, _counts(rng, n, size)))
    return _interval(estimate, np.concatenate(reps), level, method)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix via eigh (negative round-off clipped)."""
    lam, vec = np.linalg.eigh(s)
    return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


class _FidReference:
    """Reference mean, covariance trace and covariance root R = S_r^1/2, for FID against weighted samples."""

    def __init__(self, real: np.ndarray) -> None:
        cov = np.cov(real, rowvar=False)
        self.mu, self.trace, self.root = real.mean(0), float(np.trace(cov)), _sqrt_psd(cov)

    def fid(self, g: np.ndarray, gr: np.ndarray, w: np.ndarray) -> float:
        """FID of the sample with counts w over rows of g (gr = g R); zero-count rows drop out."""
        keep = w > 0
        g, gr, w = g[keep], gr[keep], w[keep]
        mu = w @ g / w.sum()
        scale = np.sqrt(w / (w.sum() - 1.0))[:, None]
        xr = scale * (gr - mu @ self.root)  # X R with X_i = sqrt(w_i / (sum w - 1)) (g_i - mu)
        gram = xr @ xr.T if xr.shape[0] <= xr.shape[1] else xr.T @ xr  # same nonzero eigenvalues
        tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None)).sum())
        tr_g = float(((scale * (g - mu)) ** 2).sum())
        return float(((mu - self.mu) ** 2).sum()) + self.trace + tr_g - 2.0 * tr_sqrt


def fid(real: np.ndarray, generated: np.ndarray) -> float:
    """||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (R S_g R)^1/2), R = S_r^1/2, via a min(m, d)-sized eigvalsh."""
    y, x = _check(real, generated)
    ref = _FidReference(y)
    return ref.fid(x, x @ ref.root, np.ones(x.shape[0]))


def paired_bootstrap_fid_difference(
    real: np.ndarray, gen_a: np.ndarray, gen_b: np.ndarray, *, n_boot: int = 200, seed: int = 0,
    level: float = 0.95, paired: bool = True, method: str = "basic",
) -> PairedInterval:
    """Bootstrap CI of FID(a) - FID(b), resampling rows i of gen_a and gen_b jointly (common noise/label).

    The reference mean and covariance are held fixed: with >= 10k reference images the reference is
    shared by both points, so its noise mostly cancels in a difference. Each replicate costs one
    eigvalsh of size min(distinct resampled rows, d) instead of a d x d sqrtm. FID's sample-size bias
    is larger in a resample (duplicated rows), which shifts a percentile interval off the estimate
    when d is not << m; the default 'basic' interval (2 est - q_hi, 2 est - q_lo) reflects it back.
    """
    y, a, b = _check(real, gen_a, gen_b)
    m, ref = a.shape[0], _FidReference(y)
    ar, br = a @ ref.root, b @ ref.root
    estimate = ref.fid(a, ar, np.ones(m)) - ref.fid(b, br, np.ones(m))
    rng, reps = np.random.default_rng(seed), np.empty(n_boot)
    for r in range(n_boot):
        wa = _counts(rng, m)
        wb = wa if paired else _counts(rng, m)
        reps[r] = ref.fid(a, ar, wa) - ref.fid(b, br, wb)
    return _interval(estimate, reps, level, method)
