"""Paired training seeds of a sweep: its `seeds:` section expands into one point per arm and study seed.

```yaml
sweep:
  variants: {ul_c6: {...}, np_c6: {...}, ul_c6_seed1: {...}}
  seeds:
    n: 6                           # study seeds 0 .. n-1 of every arm
    arms: [ul_c6, np_c6]           # variants; seed 0 of an arm is the variant itself
    rate_of: {np_c6: ul_c6}        # np_c6's stage1.target_bits_per_pixel at seed s: ul_c6's at seed s, measured
    results: results/latent_study  # where the measured rates are read (relative to the repository root)
  paired:                          # comparisons judged over the seeds (ul_pipeline/evaluation/paired_seeds.py)
    - [ul_c6, np_c6, "why"]
```

Seed s >= 1 of arm X is the point `X_seed<s>`: a variant of that name where the file has one (a
repeat run before the section existed counts as it is), else the arm's overrides with both stages'
training seeds set to s (`stage1.train.seed`, `stage2.train.seed`). An arm in `rate_of` takes its
rate target at seed s from the committed result of its UL arm at seed s (`bits_per_pixel`, to 3
significant digits); until that result exists the point `waits_for` it and cannot be loaded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ul_pipeline.config.schema import ConfigError

SEED_KEYS = ("stage1.train.seed", "stage2.train.seed")
TARGET_KEY = "stage1.target_bits_per_pixel"


@dataclass(frozen=True)
class SeedPlan:
    """The arms, the number of study seeds and the comparisons judged over them."""

    n: int
    arms: tuple[str, ...]
    paired: tuple[tuple[str, str, str], ...]
    results: Optional[str] = None  # the rates' results folder, relative to the repository root
    rate_of: tuple[tuple[str, str], ...] = ()

    def label(self, arm: str, seed: int) -> str:
        """The point label of `arm` at study seed `seed`."""
        return arm if seed == 0 else f"{arm}_seed{seed}"

    def seeds_of(self, arm: str) -> list[str]:
        return [self.label(arm, s) for s in range(self.n)]


def arm_and_seed(label: str) -> tuple[str, int]:
    """The inverse of `SeedPlan.label`: ('ul_c6', 2) for 'ul_c6_seed2', (label, 0) for a label without the suffix."""
    m = re.fullmatch(r"(.+)_seed(\d+)", label)
    return (m.group(1), int(m.group(2))) if m else (label, 0)


def round_rate(bits_per_pixel: float) -> float:
    """A measured rate as a target: 3 significant digits (0.32777 -> 0.328, 0.098676 -> 0.0987)."""
    return float(f"{bits_per_pixel:.3g}")


def measured_rate(results_root: Path, label: str) -> Optional[float]:
    """The committed held-out bits/pixel of a point, or None when it has no committed result yet.

    A result that cannot give a rate is a ConfigError naming its file: a bare JSON or key error named nothing, and a
    rate of 0 would have become a target of 0, which means "beta fixed"."""
    path = results_root / label / "result.json"
    if not path.exists():
        return None
    what = f"{path}: {label}'s committed result (a seed point's rate target)"
    fix = f"restore it (git checkout -- {path}) or delete it and run the point {label} again"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{what} is not valid JSON ({e}); {fix}") from None
    metrics = record.get("metrics") if isinstance(record, dict) else None
    rate = metrics.get("bits_per_pixel") if isinstance(metrics, dict) else None
    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        raise ConfigError(f"{what} has no metrics.bits_per_pixel number; {fix}")
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"{what}: metrics.bits_per_pixel = {rate!r} is not a rate (need a finite value > 0); {fix}")
    return round_rate(float(rate))


def expand_seeds(section: Any, variants: dict[str, dict], origin: str, repo_root: Path
                 ) -> tuple[SeedPlan, list[tuple[str, dict, Optional[str], Optional[str]]]]:
    """(the plan, [(label, overrides, waits_for, rate_from)] of the seed points the variants do not already hold;
    rate_from: the point whose committed rate is the point's target, None for an arm not in rate_of)."""
    where = f"{origin}: sweep.seeds"
    if not isinstance(section, dict) or set(section) - {"n", "arms", "rate_of", "results"}:
        raise ConfigError(f"{where}: a mapping with n, arms, and optionally rate_of and results")
    n, arms, rate_of = section.get("n"), section.get("arms"), section.get("rate_of") or {}
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ConfigError(f"{where}.n: need an integer >= 2, got {n!r}")
    if not isinstance(arms, list) or not arms or any(a not in variants for a in arms):
        raise ConfigError(f"{where}.arms: a list of variants of this sweep, got {arms!r} "
                          f"(variants: {', '.join(variants)})")
    if not isinstance(rate_of, dict) or any(k not in arms or v not in arms for k, v in rate_of.items()):
        raise ConfigError(f"{where}.rate_of: arm -> the arm whose measured rate it targets, both in arms; got {rate_of!r}")
    if rate_of and not section.get("results"):
        raise ConfigError(f"{where}.results: rate_of needs the results folder the rates are read from")
    plan = SeedPlan(n, tuple(arms), (), section.get("results"), tuple(rate_of.items()))
    points = []
    for s in range(1, n):
        for arm in arms:  # seed by seed, arms in order: a UL arm before the arm that takes its rate
            label = plan.label(arm, s)
            if label in variants:  # counts as it is, but it must train at seed s: it is paired as seed s
                wrong = [f"{k} = {variants[label].get(k)!r}" for k in SEED_KEYS if variants[label].get(k) != s]
                if wrong:
                    raise ConfigError(f"{origin}: sweep.variants.{label} is {arm} at study seed {s} (sweep.seeds), "
                                      f"but sets {', '.join(wrong)}: give it {' and '.join(SEED_KEYS)} = {s}, "
                                      "or another name")
                continue
            overrides = {**variants[arm], **{k: s for k in SEED_KEYS}}
            waits_for, source = None, None
            if arm in rate_of:
                source = plan.label(rate_of[arm], s)
                rate = measured_rate(repo_root / plan.results, source)
                if rate is None:
                    waits_for = source
                    overrides.pop(TARGET_KEY, None)
                else:
                    overrides[TARGET_KEY] = rate
            points.append((label, overrides, waits_for, source))
    return plan, points
