"""The paired-seed rule: a difference of two latent families judged over n paired training seeds.

For a comparison a vs b, seed s trains both arms from the same study seed (same Stage-2
initialisation, data order and sampling noise) and gives one paired difference
d_s = KID(a_s) - KID(b_s), estimated on generated samples with a within-seed standard error w_s.
Each d_s = delta + u_s + e_s: delta the family difference, u_s the training-seed effect on the
difference (a shift common to both arms cancels in d_s, the rest does not), e_s the sampling error
of seed s's estimate (sd w_s). So the spread of d_s across seeds already holds both noises, and

    estimate  = mean_s d_s
    SE        = sqrt(max(var_s(d_s), mean_s(w_s^2)) / n)      (var with n - 1 in the denominator)
    interval  = estimate +- t_{n-1, (1 + level) / 2} * SE

the t-interval over seeds; the max keeps the interval from being narrower than the sampling error
alone when a few seeds happen to agree. The unpaired interval (`unpaired_seed_interval`) compares
the two arms' seed means as independent samples (Welch): it counts the common shift as noise.

A family wins when the interval excludes 0; otherwise there is no detectable difference, and the
minimum detectable difference (`minimum_detectable_difference`: the |delta| a two-sided t-test at
this n detects with 80% power, for the measured spread) says how small a difference could still hide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import optimize, stats

POWER = 0.8  # the power at which a minimum detectable difference is quoted


@dataclass(frozen=True)
class SeedInterval:
    """A difference over training seeds with its interval and the parts of its standard error."""

    estimate: float
    low: float
    high: float
    level: float
    n_seeds: int
    se: float  # standard error of the estimate
    seed_sd: float  # sd over seeds of the per-seed differences (of KID(a) and KID(b) apart, unpaired)
    within_se: float  # root mean square of the per-seed sampling standard errors
    method: str = "paired-t"

    def excludes(self, value: float = 0.0) -> bool:
        """True if `value` lies outside [low, high]."""
        return not self.low <= value <= self.high

    @property
    def spread(self) -> float:
        """The per-seed sd behind the SE (SE * sqrt(n)): what the minimum detectable difference scales."""
        return self.se * math.sqrt(self.n_seeds)


def _array(values: Sequence[float], what: str, n_min: int = 2) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size < n_min or not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: need >= {n_min} finite values in a 1-d sequence, got {values!r}")
    return x


def _within(within_se: Optional[Sequence[float]], n: int, what: str) -> np.ndarray:
    if within_se is None:
        return np.zeros(n)
    w = _array(within_se, what, 1)
    if w.size != n or np.any(w < 0):
        raise ValueError(f"{what}: need {n} standard errors >= 0, got {within_se!r}")
    return w


def _level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"need 0 < level < 1, got {level}")
    return float(level)


def paired_seed_interval(differences: Sequence[float], within_se: Optional[Sequence[float]] = None,
                         level: float = 0.95) -> SeedInterval:
    """The t-interval of mean_s d_s over n >= 2 paired seeds (module docstring); within_se: w_s per seed.

    Seeds that agree exactly with no sampling error (SE 0) are a ValueError: the interval [d, d] would claim
    certainty from n seeds (identical arms, or within-seed SEs that were never measured)."""
    d = _array(differences, "paired differences")
    n, w, level = d.size, _within(within_se, d.size, "within-seed standard errors"), _level(level)
    sd, rms_w = float(d.std(ddof=1)), float(np.sqrt(np.mean(w**2)))
    se = math.sqrt(max(sd**2, rms_w**2) / n)
    if se == 0.0:
        raise ValueError(f"no noise measured: the {n} paired differences are all {d[0]!r} and no within-seed "
                         "standard error is > 0, so an interval would have zero width")
    half = float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * se
    est = float(d.mean())
    return SeedInterval(est, est - half, est + half, level, n, se, sd, rms_w)


def unpaired_seed_interval(values_a: Sequence[float], values_b: Sequence[float], level: float = 0.95,
                           within_se_a: Optional[Sequence[float]] = None,
                           within_se_b: Optional[Sequence[float]] = None) -> SeedInterval:
    """Welch's t-interval of mean(a) - mean(b) with the seeds of a and b taken as independent (no pairing)."""
    a, b = _array(values_a, "values of a"), _array(values_b, "values of b")
    wa, wb = _within(within_se_a, a.size, "within-seed SE of a"), _within(within_se_b, b.size, "within-seed SE of b")
    level = _level(level)
    va, vb = max(a.var(ddof=1), float(np.mean(wa**2))) / a.size, max(b.var(ddof=1), float(np.mean(wb**2))) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if va + vb > 0 else a.size + b.size - 2
    half = float(stats.t.ppf((1.0 + level) / 2.0, df)) * se
    est = float(a.mean() - b.mean())
    return SeedInterval(est, est - half, est + half, level, min(a.size, b.size), se,
                        math.sqrt(a.var(ddof=1) + b.var(ddof=1)), float(np.sqrt(np.mean(np.r_[wa, wb] ** 2))),
                        "welch-t")


def power(delta: float, spread: float, n: int, level: float = 0.95) -> float:
    """P(the paired t-interval over n seeds excludes 0) when the true difference is delta and the per-seed
    differences have sd `spread` (a two-sided one-sample t-test: noncentral t with n - 1 degrees of freedom)."""
    if not _whole(n) or not 0 < spread < math.inf or not math.isfinite(delta):
        raise ValueError(f"need an integer n >= 2, a finite spread > 0 and a finite delta, got {n}, {spread}, {delta}")
    crit, nc = stats.t.ppf((1.0 + _level(level)) / 2.0, n - 1), abs(delta) * math.sqrt(n) / spread
    upper, lower = stats.nct.sf(crit, n - 1, nc), stats.nct.cdf(-crit, n - 1, nc)
    if not np.isfinite(upper):  # scipy's noncentral t gives NaN past a noncentrality of ~1e10, where power is 1
        return 1.0
    return float(upper + (0.0 if not np.isfinite(lower) else lower))  # far out, the lower tail underflows to NaN


def _whole(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 2


def minimum_detectable_difference(spread: float, n: int, level: float = 0.95, power_wanted: float = POWER) -> float:
    """The |delta| that n paired seeds with per-seed sd `spread` detect with probability `power_wanted`."""
    if not _whole(n) or not 0 < spread < math.inf or not 0.0 < power_wanted < 1.0:
        raise ValueError(f"need an integer n >= 2, a finite spread > 0 and 0 < power < 1, got {n}, {spread}, "
                         f"{power_wanted}")
    _level(level)
    hi = 60.0 / math.sqrt(n)  # in units of spread: a noncentrality of 60, far past any power asked for
    return float(optimize.brentq(lambda x: power(x * spread, spread, n, level) - power_wanted, 0.0, hi)) * spread


def verdict(a: str, b: str, interval: SeedInterval, mdd: float, metric: str = "KID") -> str:
    """The stated rule's wording for one comparison."""
    span = f"{metric}({a}) - {metric}({b}) = {interval.estimate:.2e} [{interval.low:.2e}, {interval.high:.2e}]"
    tail = f" ({interval.n_seeds} paired seeds, {100 * interval.level:.0f}% interval)"
    if interval.high < 0:
        return f"{a} better: {span} excludes 0{tail}"
    if interval.low > 0:
        return f"{b} better: {span} excludes 0{tail}"
    return (f"no detectable difference, smaller than {mdd:.2e} (the minimum detectable difference at "
            f"{interval.n_seeds} seeds, {100 * POWER:.0f}% power): {span}{tail}")


def power_table(spreads: dict[str, float], ns: Sequence[int], gaps: Optional[dict[str, float]] = None,
                level: float = 0.95) -> list[dict]:
    """Per n: each comparison's minimum detectable difference for its per-seed spread, and (with `gaps`) the
    power at that comparison's gap. Rows {"n": n, "<name>": {"mdd": ..., "power": ...}}."""
    rows = []
    for n in ns:
        row: dict = {"n": int(n)}
        for name, spread in spreads.items():
            row[name] = {"mdd": minimum_detectable_difference(spread, n, level)}
            if gaps and name in gaps:
                row[name]["power"] = power(gaps[name], spread, n, level)
        rows.append(row)
    return rows


def power_markdown(rows: list[dict], spreads: dict[str, float], gaps: Optional[dict[str, float]] = None) -> str:
    """The power table as Markdown: MDD x1e3 (and the power at the gap) per comparison and n."""
    names = list(spreads)
    head = ["n seeds"] + [f"{k}: MDD x1e3 (sd {1e3 * spreads[k]:.2f})"
                          + (f" / power at {1e3 * gaps[k]:+.2f}" if gaps and k in gaps else "") for k in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["n"])]
        for k in names:
            c = r[k]
            cells.append(f"{1e3 * c['mdd']:.2f}" + (f" / {100 * c['power']:.0f}%" if "power" in c else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
