"""How many paired training seeds the latent study needs: the power table from the committed seeds 0 and 1.

    .venv/bin/python scripts/latent_study_power.py        # writes docs/latent_study/power.md and power.json

Reads only committed files: each point's KID against the 10k training reference
(results/latent_study/<point>/result.json) and the seed-0 paired-bootstrap intervals of the three
comparisons (docs/latent_study/summary.json, the report made before the paired-seed rule).

The per-seed sd of a paired difference d_s = KID(a_s) - KID(b_s) is sigma_d^2 = sigma_t^2 + w^2:
sigma_t the training seeds' effect on the difference, w one seed's sampling error of it. Assumptions:
- w per comparison: the seed-0 paired-bootstrap 95% interval's width / (2 x 1.96); the same at every seed
  (same sample counts and reference).
- sigma_t: only ul_c6/np_c6 has two seeds; their differences give sigma_d's estimate s = |d_1 - d_0| / sqrt 2
  with one degree of freedom, so sigma_t^2 = max(0, s^2 - w_c6^2) is carried to the other two comparisons.
- planning: sigma_d = sqrt(w^2 + sigma_t^2); pessimistic: the one-sided 80% upper confidence bound of s,
  s / sqrt(chi2_{0.2, 1}), for every comparison; unpaired: the seed sd of one arm's KID from its two seeds,
  sqrt(2) times for a difference of independent arms (what the old rule's seed spread measured).
- the gap: the mean paired difference over the seeds that exist, the power is the chance that the
  paired t-interval over n seeds excludes 0 at that gap (two-sided, 95%).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from scipy import stats

from ul_pipeline.evaluation.paired_seeds import minimum_detectable_difference, power_markdown, power_table

ROOT = Path(__file__).resolve().parents[1]
COMPARISONS = {"ul_c6 vs np_c6": ("ul_c6", "np_c6"), "ul_c3 vs np_c3": ("ul_c3", "np_c3"),
               "ul_c6 vs kl_vae": ("ul_c6", "kl_vae")}
SEED1 = {"ul_c6": "ul_c6_seed1", "np_c6": "np_c6_seed1"}
NS = range(2, 11)
DETECT = 1.0e-3  # the difference worth detecting: 5% of the study's KIDs (~0.02), the size of the c_lf 6 gap
POWER_AT = 0.8


def kid(label: str) -> float:
    return json.loads((ROOT / "results/latent_study" / label / "result.json").read_text())["metrics"]["kid_train"]


def main() -> None:
    old = {(c["a"], c["b"]): c for c in json.loads((ROOT / "docs/latent_study/summary.json").read_text())["comparisons"]}
    within, gaps, seeds = {}, {}, {}
    for name, (a, b) in COMPARISONS.items():
        c = old[(a, b)]
        within[name] = (c["kid_high"] - c["kid_low"]) / (2 * 1.959964)
        d = [kid(a) - kid(b)]
        if a in SEED1 and b in SEED1:
            d.append(kid(SEED1[a]) - kid(SEED1[b]))
        seeds[name], gaps[name] = d, sum(d) / len(d)
    d6 = seeds["ul_c6 vs np_c6"]
    s = abs(d6[1] - d6[0]) / math.sqrt(2)
    sigma_t2 = max(0.0, s**2 - within["ul_c6 vs np_c6"] ** 2)
    planning = {k: math.sqrt(w**2 + sigma_t2) for k, w in within.items()}
    pessimistic_sd = s / math.sqrt(stats.chi2.ppf(0.2, 1))
    arm_sd = {x: abs(kid(x) - kid(SEED1[x])) / math.sqrt(2) for x in SEED1}
    unpaired_sd = math.sqrt(sum(v**2 for v in arm_sd.values()))
    scenarios = {"planning": planning, "pessimistic": {k: pessimistic_sd for k in COMPARISONS},
                 "unpaired": {k: unpaired_sd for k in COMPARISONS}}
    tables = {name: power_table(sp, NS, gaps) for name, sp in scenarios.items()}
    chosen = next(n for n in NS if n >= 4 and all(minimum_detectable_difference(planning[k], n) <= DETECT
                                                   for k in ("ul_c6 vs np_c6",)))
    out = ROOT / "docs/latent_study"
    summary = {"paired_differences": seeds, "within_seed_se": within, "seed_sd_of_difference_c6": s,
               "sigma_train_of_difference": math.sqrt(sigma_t2), "pessimistic_sd": pessimistic_sd,
               "arm_seed_sd": arm_sd, "unpaired_sd": unpaired_sd, "gaps": gaps, "detect": DETECT,
               "chosen_n": chosen, "tables": tables}
    (out / "power.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# Power of the paired-seed rule, from the committed seeds 0 and 1",
             "", "Made by `scripts/latent_study_power.py` (its docstring states the assumptions).", "",
             "Paired differences KID(a) - KID(b) so far: "
             + "; ".join(f"{k}: " + ", ".join(f"{1e3 * v:+.2f}e-3" for v in d) for k, d in seeds.items()) + ".",
             "Within-seed SE of the difference (seed-0 paired bootstrap): "
             + ", ".join(f"{k} {1e3 * w:.2f}e-3" for k, w in within.items()) + ".",
             f"ul_c6 vs np_c6 over its two seeds: per-seed sd s = {1e3 * s:.2f}e-3 (1 degree of freedom), "
             f"training part sqrt(max(0, s^2 - w^2)) = {1e3 * math.sqrt(sigma_t2):.2f}e-3; 80% upper bound of s "
             f"{1e3 * pessimistic_sd:.2f}e-3. One arm's KID across the two seeds: "
             + ", ".join(f"{x} sd {1e3 * v:.2f}e-3" for x, v in arm_sd.items())
             + f", so an unpaired difference has sd {1e3 * unpaired_sd:.2f}e-3.", "",
             "MDD: the |KID(a) - KID(b)| that the 95% paired t-interval over n seeds excludes 0 for with 80% power; "
             "power: that chance at the gap the existing seeds show.", ""]
    for name, rows in tables.items():
        lines += [f"## {name}", "", power_markdown(rows, scenarios[name], gaps), ""]
    lines += [f"Chosen: n = {chosen}, the smallest n >= 4 at which the planning MDD of ul_c6 vs np_c6 (the "
              f"comparison with two seeds and the smallest gap) is at most {1e3 * DETECT:.1f}e-3.", ""]
    (out / "power.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
