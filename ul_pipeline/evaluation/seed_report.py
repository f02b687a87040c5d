"""The paired-seed report from committed results: per comparison the per-seed differences, the interval, the verdict.

For each comparison of a sweep's `seeds:` plan (ul_pipeline/config/seeds.py) and each study seed at
which both arms have a committed result: d_s = KID(a_s) - KID(b_s) against the reference features
and its within-seed SE (`statistics.paired_kid_difference`, the samples paired row by row). Then the
paired-seed rule (`paired_seeds`): interval, minimum detectable difference, verdict, and the
unpaired interval beside it. Writes `seeds.md`, `seeds.json` and `paired_seeds.png` (a strip plot
per comparison: seeds as points with +-1.96 SE bars, the interval as a bar beside them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ul_pipeline.config.seeds import SeedPlan, arm_and_seed
from ul_pipeline.evaluation import paired_seeds, statistics
from ul_pipeline.evaluation.results import CommittedResult, load_features

POWER_NS = range(4, 11)


def seed_differences(plan: SeedPlan, a: str, b: str, results: dict[str, CommittedResult],
                     reference: np.ndarray) -> list[dict[str, Any]]:
    """One row per study seed at which both arms are committed."""
    rows = []
    for s in range(plan.n):
        la, lb = plan.label(a, s), plan.label(b, s)
        if la not in results or lb not in results:
            continue
        ra, rb = results[la], results[lb]
        fa, fb = load_features(ra), load_features(rb)
        d, w = statistics.paired_kid_difference(reference, fa, fb)
        rate_a, rate_b = ra.metrics.get("bits_per_pixel"), rb.metrics.get("bits_per_pixel")
        rows.append({"seed": s, "a": la, "b": lb, "difference": d, "within_se": w,
                     "kid_a": ra.metrics.get("kid_train"), "kid_b": rb.metrics.get("kid_train"),
                     "kid_se_a": ra.metrics.get("kid_train_se"), "kid_se_b": rb.metrics.get("kid_train_se"),
                     "rate_ratio": rate_a / rate_b if rate_a and rate_b else None,  # autocast where it ran:
                     "precision": per_arm(ra.metrics.get("sampler_precision"), rb.metrics.get("sampler_precision")),
                     "machine": per_arm(machine_kind(ra), machine_kind(rb))})
    return rows


def per_arm(value_a: Any, value_b: Any) -> Optional[str]:
    """One value when both arms of a seed share it, else 'a/b' in arm order ('?' where an arm recorded none)."""
    if value_a is None and value_b is None:
        return None
    return str(value_a) if value_a == value_b else f"{value_a or '?'}/{value_b or '?'}"


def machine_kind(result: CommittedResult) -> Optional[str]:
    """What decides a point's rounding (results.machine): the GPU, else torch's CPU kernel ISA and native bf16
    (AVX512+bf16, AVX512, AVX2); None for a result made before the machine was recorded."""
    m = result.record.get("machine")
    if not isinstance(m, dict):
        return None
    return str(m["gpu"]) if m.get("gpu") else f"{m.get('torch_cpu_capability') or '?'}" + (
        "+bf16" if m.get("avx512_bf16") else "")


def waiting(plan: SeedPlan, a: str, b: str, results: dict[str, CommittedResult]) -> list[str]:
    """The seeds at which one arm is committed and its partner not yet: left out of the pairing, named."""
    out = []
    for s in range(plan.n):
        la, lb = plan.label(a, s), plan.label(b, s)
        if (la in results) != (lb in results):
            out.append(f"seed {s} waits for {lb if la in results else la}")
    return out


def beyond_n(plan: SeedPlan, a: str, b: str, committed: Sequence[str]) -> list[str]:
    """Committed seed points of a or b at a seed >= plan.n: seeds a lowered n would drop unseen (the rule fixes n
    before any result), named in the verdict."""
    return [plan.label(arm, s) for arm in (a, b)
            for s in sorted(seed for x_arm, seed in map(arm_and_seed, committed) if x_arm == arm) if s >= plan.n]


def judge(plan: SeedPlan, a: str, b: str, rows: list[dict[str, Any]], waits: Sequence[str] = (),
          beyond: Sequence[str] = ()) -> dict[str, Any]:
    """The rule applied to one comparison's seeds (provisional while fewer than plan.n are in); named in the
    verdict: `waits`, the seeds with one arm committed (`waiting`), and `beyond`, seeds past n (`beyond_n`)."""
    out: dict[str, Any] = {"a": a, "b": b, "seeds": rows, "n": len(rows), "planned": plan.n, "waiting": list(waits),
                           "beyond_n": list(beyond)}
    waits_text = "".join(f"; {w}" for w in waits)
    if beyond:
        waits_text += f"; committed beyond n = {plan.n}, not judged: {', '.join(beyond)}"
    if len(rows) < 2:
        out["verdict"] = f"not judged: {len(rows)} of {plan.n} paired seeds committed{waits_text}"
        return out
    try:
        interval = paired_seeds.paired_seed_interval([r["difference"] for r in rows], [r["within_se"] for r in rows])
    except ValueError as e:  # e.g. no noise measured: both arms' samples identical at every seed
        out["verdict"] = f"not judged: {e}"
        return out
    unpaired = paired_seeds.unpaired_seed_interval([r["kid_a"] for r in rows], [r["kid_b"] for r in rows],
                                                   within_se_a=[r["kid_se_a"] or 0.0 for r in rows],
                                                   within_se_b=[r["kid_se_b"] or 0.0 for r in rows])
    mdd = paired_seeds.minimum_detectable_difference(interval.spread, interval.n_seeds)
    verdict = paired_seeds.verdict(a, b, interval, mdd)
    if len(rows) < plan.n or waits_text:
        verdict = f"provisional ({len(rows)} of {plan.n} seeds{waits_text}): {verdict}"
    out.update(interval=interval.__dict__, unpaired=unpaired.__dict__, mdd=mdd, verdict=verdict)
    return out


def strip_plot(judged: list[dict[str, Any]], path: str | Path) -> Path:
    """Per comparison: the seeds' paired differences (x1e3, +-1.96 SE) and the 95% interval as a bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * max(1, len(judged)), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    for i, c in enumerate(judged):
        ax = fig.add_subplot(1, len(judged), i + 1)
        rows = c["seeds"]
        xs = np.linspace(-0.3, 0.3, max(len(rows), 2))[: len(rows)] if len(rows) > 1 else np.zeros(len(rows))
        for x, r in zip(xs, rows):
            ax.errorbar(x, 1e3 * r["difference"], yerr=1.96e3 * r["within_se"], fmt="o", color="C0", capsize=2)
            ax.annotate(str(r["seed"]), (x, 1e3 * r["difference"]), textcoords="offset points", xytext=(4, 2),
                        fontsize=7)
        if "interval" in c:
            iv = c["interval"]
            ax.errorbar(1.0, 1e3 * iv["estimate"], yerr=[[1e3 * (iv["estimate"] - iv["low"])],
                                                         [1e3 * (iv["high"] - iv["estimate"])]],
                        fmt="s", color="C3", capsize=6, lw=3, label="mean, 95% paired-seed interval")
            up = c["unpaired"]
            ax.errorbar(1.5, 1e3 * up["estimate"], yerr=[[1e3 * (up["estimate"] - up["low"])],
                                                         [1e3 * (up["high"] - up["estimate"])]],
                        fmt="s", color="0.6", capsize=6, lw=2, label="unpaired interval (decides nothing)")
            ax.legend(fontsize=6, loc="best")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks([0.0, 1.0, 1.5], ["seeds", "paired", "unpaired"], fontsize=8)
        ax.set_xlim(-0.6, 1.9)
        ax.set_title(f"{c['a']} vs {c['b']} ({c['n']} seeds)", fontsize=9)
        ax.set_ylabel("KID(a) - KID(b)  x1e3  (below 0: a better)", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def markdown(judged: list[dict[str, Any]], power_rows: list[dict], spreads: dict[str, float]) -> str:
    lines = ["# Paired training seeds: the verdicts", "",
             "The rule: docs/results/latent-study.md. d = KID(a) - KID(b) per seed (x1e3, +- within-seed SE).", "",
             "| comparison | per-seed d x1e3 (seed: d +- SE, rate a/b, precision, machine: a/b where the arms differ) "
             "| paired 95% interval x1e3 | unpaired x1e3 | MDD x1e3 | verdict |", "|---|---|---|---|---|---|"]
    for c in judged:
        seeds = "; ".join([f"{r['seed']}: {1e3 * r['difference']:+.2f} ± {1e3 * r['within_se']:.2f}"
                           + (f", {r['rate_ratio']:.2f}" if r["rate_ratio"] else "")
                           + (f", {r['precision']}" if r.get("precision") else "")
                           + (f", {r['machine']}" if r.get("machine") else "") for r in c["seeds"]]
                          + list(c.get("waiting", ())))
        if "interval" in c:
            iv, up = c["interval"], c["unpaired"]
            cells = [f"{1e3 * iv['estimate']:+.2f} [{1e3 * iv['low']:+.2f}, {1e3 * iv['high']:+.2f}]",
                     f"[{1e3 * up['low']:+.2f}, {1e3 * up['high']:+.2f}]", f"{1e3 * c['mdd']:.2f}"]
        else:
            cells = ["–", "–", "–"]
        lines.append(f"| {c['a']} vs {c['b']} | {seeds or '–'} | " + " | ".join(cells) + f" | {c['verdict']} |")
    if spreads:
        lines += ["", "Power at the measured per-seed spreads (MDD: the difference detected with 80% power):", "",
                  paired_seeds.power_markdown(power_rows, spreads)]
    return "\n".join(lines) + "\n"


PAGE = "seeds.md"  # the page with the verdicts (a study's comparisons.md points here)


def write_seed_report(plan: SeedPlan, results: dict[str, CommittedResult], reference: np.ndarray,
                      out_dir: str | Path, committed: Sequence[str] = ()) -> dict[str, Any]:
    """seeds.md, seeds.json and paired_seeds.png in out_dir; returns the summary. `committed`: the labels of every
    result folder (also those no point of the sweep), to name seeds committed beyond plan.n."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    judged = [judge(plan, a, b, seed_differences(plan, a, b, results, reference), waiting(plan, a, b, results),
                    beyond_n(plan, a, b, committed)) for a, b, _ in plan.paired]
    spreads = {f"{c['a']} vs {c['b']}": c["interval"]["se"] * np.sqrt(c["n"]) for c in judged if "interval" in c}
    power_rows = paired_seeds.power_table(spreads, POWER_NS) if spreads else []
    (out_dir / PAGE).write_text(markdown(judged, power_rows, spreads))
    summary = {"comparisons": judged, "power": power_rows, "spreads": spreads}
    (out_dir / "seeds.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    strip_plot(judged, out_dir / "paired_seeds.png")
    return summary
