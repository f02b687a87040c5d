"""The decisive comparison of latent families from committed results: a table, paired intervals, two plots.

Each point is put in its family by what its config changes (UL: diffusion prior and decoder; the
same decoder with a normal prior; the SD-style KL-VAE: normal prior and MSE decoder; and a
narrower base model on a UL store). Pairs are compared on the same samples' noise (common random
numbers), so the paired bootstrap of KID(a) - KID(b) over generated samples is much narrower than
two independent error bars; the training-seed spread comes from the repeated points. The rule
(decided before the numbers, docs/results/latent-study.md): a at a matched rate beats b if the 95% paired interval of
KID(a) - KID(b) lies below 0 and the gap exceeds twice the seed spread of KID.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ul_pipeline.config.seeds import arm_and_seed
from ul_pipeline.evaluation import statistics
from ul_pipeline.evaluation.results import CommittedResult, load_features

FAMILIES = {"ul": "UL (diffusion prior + diffusion decoder)", "normal": "VAE: normal prior + learned variance + diffusion decoder",
            "kl_vae": "KL-VAE (normal prior + MSE decoder)", "narrow_base": "UL store, quarter-FLOP base model"}
TABLE_METRICS = ("bits_per_pixel", "bits_per_image", "psnr", "rfid", "cross_fid", "gfid", "kid_train", "kid_train_se")


def family(config: dict, base_preset: str) -> str:
    """The point's family from its config (see FAMILIES)."""
    s1 = config["stage1"]
    if config["stage2"]["preset"] != base_preset:
        return "narrow_base"
    if s1["prior"] == "normal":
        return "kl_vae" if s1["decoder_loss"] == "mse" else "normal"
    return "ul"


@dataclass(frozen=True)
class Pair:
    """A planned comparison: a against b, and why (matched rate, seed repeat, ...)."""

    a: str
    b: str
    why: str


def study_rows(results: dict[str, CommittedResult], base_preset: str) -> list[dict[str, Any]]:
    """One row per committed point: family, the table's metrics, wall time and the commit it ran at."""
    rows = []
    for label, r in results.items():
        m = r.metrics
        rows.append({"point": label, "family": family(r.record["config"], base_preset),
                     **{k: m.get(k) for k in TABLE_METRICS}, "wall_seconds": r.record.get("wall_seconds"),
                     "commit": (r.record.get("commit") or "").split("+")[-1][:10]})
    return rows


def compare(results: dict[str, CommittedResult], pairs: Sequence[Pair], reference: np.ndarray,
            n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Paired bootstrap intervals of KID(a) - KID(b) (and FID against the training reference) per pair."""
    out, features = [], {}
    for p in pairs:
        if p.a not in results or p.b not in results:
            out.append({"a": p.a, "b": p.b, "why": p.why, "missing": [x for x in (p.a, p.b) if x not in results]})
            continue
        for x in (p.a, p.b):  # a point in several pairs is read once
            if x not in features:
                features[x] = load_features(results[x])
        fa, fb = features[p.a], features[p.b]
        kid = statistics.paired_bootstrap_kid_difference(reference, fa, fb, n_boot=n_boot, seed=seed)
        ra, rb = (results[x].metrics.get("bits_per_pixel") for x in (p.a, p.b))
        out.append({"a": p.a, "b": p.b, "why": p.why, "kid_diff": kid.estimate, "kid_low": kid.low,
                    "kid_high": kid.high, "rate_ratio": (ra / rb) if ra and rb else None})
    return out


def seed_spread(results: dict[str, CommittedResult], repeats: Sequence[tuple[str, str]]) -> Optional[float]:
    """The largest |KID(seed 0) - KID(seed 1)| over the repeated points (None without any)."""
    gaps = [abs(results[a].metrics["kid_train"] - results[b].metrics["kid_train"])
            for a, b in repeats if a in results and b in results]
    return max(gaps) if gaps else None


def verdict(c: dict[str, Any], spread: Optional[float]) -> str:
    """The pre-stated rule applied to one comparison."""
    if "missing" in c:
        return f"not run yet ({', '.join(c['missing'])})"
    width = c["kid_high"] - c["kid_low"]
    gap_ok = spread is not None and abs(c["kid_diff"]) > 2 * spread
    if c["kid_high"] < 0 and gap_ok:
        return f"{c['a']} better: CI below 0 and the gap exceeds twice the seed spread"
    if c["kid_low"] > 0 and gap_ok:
        return f"{c['b']} better: CI above 0 and the gap exceeds twice the seed spread"
    if c["kid_high"] < 0 or c["kid_low"] > 0:
        return (f"{'a' if c['kid_high'] < 0 else 'b'} ahead on these samples, but within "
                f"{'an unknown' if spread is None else 'twice the'} seed spread: no detectable difference")
    return f"no detectable difference at this budget (CI width {width:.2e})"


def arms(rows: list[dict[str, Any]], family: str, x: str) -> list[dict[str, Any]]:
    """One entry per arm of `family` (a point and its `<point>_seed<s>` repeats), in order of mean x: the arm's
    points, their mean x and KID, and the KID error bar: the sd over seeds with 2 or more, else the point's SE."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["family"] == family and r.get(x) is not None and r.get("kid_train") is not None:
            groups.setdefault(arm_and_seed(r["point"])[0], []).append(r)
    out = []
    for arm, pts in groups.items():
        kids = np.array([r["kid_train"] for r in pts])
        err = float(kids.std(ddof=1)) if len(pts) > 1 else float(pts[0]["kid_train_se"])
        out.append({"arm": arm, "points": pts, "x": float(np.mean([r[x] for r in pts])), "kid": float(kids.mean()),
                    "err": err})
    return sorted(out, key=lambda a: a["x"])


def annotate_apart(ax, labels: Sequence[tuple[str, tuple[float, float]]], step: float = 9.0) -> list:
    """Label each point (text, (x, y)) up and to its right, from the top down; a label that would overlap one
    already placed moves down by `step` points until it is clear (at most 8 times). Returns the annotations."""
    renderer = ax.figure.canvas.get_renderer()
    placed, boxes = [], []
    for text, xy in sorted(labels, key=lambda t: -t[1][1]):
        for k in range(9):
            ann = ax.annotate(text, xy, textcoords="offset points", xytext=(4, 4 - k * step), fontsize=7)
            box = ann.get_window_extent(renderer)
            if k == 8 or not any(box.overlaps(b) for b in boxes):
                break
            ann.remove()
        placed.append(ann)
        boxes.append(box)
    return placed


def plot(rows: list[dict[str, Any]], path: str | Path, x: str, xlabel: str, log_x: bool = False) -> Path:
    """KID against `x`, one line per family through its arms' means over seeds (error bar: the seed sd, or +- 1
    SE for an arm with one point); each seed's point is a small dot beside its arm."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels: list[tuple[str, tuple[float, float]]] = []
    for fam, name in FAMILIES.items():
        fam_arms = arms(rows, fam, x)
        if not fam_arms:
            continue
        line = ax.errorbar([a["x"] for a in fam_arms], [a["kid"] for a in fam_arms],
                           yerr=[a["err"] for a in fam_arms], marker="o", capsize=3, label=name)
        for a in fam_arms:
            if len(a["points"]) > 1:
                ax.scatter([r[x] for r in a["points"]], [r["kid_train"] for r in a["points"]], s=9, alpha=0.45,
                           color=line.lines[0].get_color(), linewidths=0)
            label = a["arm"] if len(a["points"]) == 1 else f"{a['arm']} ({len(a['points'])} seeds)"
            labels.append((label, (a["x"], a["kid"])))
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("KID vs 10k training images (lower is better)")
    ax.set_title("arm means over seeds (bar: seed sd; one point: +- 1 SE); dots: the seeds", fontsize=8)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.canvas.draw()  # lay the figure out first, so label boxes are measured where they will be drawn
    placed = annotate_apart(ax, labels)
    fig.canvas.draw()  # the layout makes room for a label past the axes' edge, narrowing the axes: place them again
    for ann in placed:
        ann.remove()
    fig.set_layout_engine("none")  # in that layout, kept: savefig must not move the points under placed labels
    annotate_apart(ax, labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The study table as Markdown (KID as value +- SE, times in minutes)."""
    head = ("point", "family", "bits/pixel", "bits/image", "PSNR", "rFID", "cross-FID", "gFID (N=500)",
            "KID x1e3 (10k ref)", "wall (min)", "commit")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)
    for r in rows:
        kid = "–" if r["kid_train"] is None else f"{1e3 * r['kid_train']:.2f} ± {1e3 * r['kid_train_se']:.2f}"
        lines.append("| " + " | ".join([r["point"], r["family"], f(r["bits_per_pixel"], ".3f"), f(r["bits_per_image"], ".0f"),
                                        f(r["psnr"], ".2f"), f(r["rfid"], ".1f"), f(r["cross_fid"], ".1f"),
                                        f(r["gfid"], ".1f"), kid, f(None if r["wall_seconds"] is None
                                                                    else r["wall_seconds"] / 60, ".1f"),
                                        r["commit"]]) + " |")
    return "\n".join(lines)


def comparisons_markdown(comparisons: list[dict[str, Any]], spread: Optional[float], n_repeats: int,
                         decided_by: Optional[str] = None) -> str:
    """comparisons.md: the seed spread, then one row per pair with its paired interval and verdict (see write_comparison)."""
    head = "verdict" if decided_by is None else f"verdict by the single-seed rule (replaced: see {decided_by})"
    lines = [] if decided_by is None else [
        f"Single-seed comparisons (each pair's seed-0 points, bootstrap over generated samples), judged by the "
        f"study's first rule. That rule is replaced: the verdicts of this study are the paired-seed ones in "
        f"[{decided_by}]({decided_by}).", ""]
    lines += [f"Seed spread of KID (largest |seed 0 - seed 1| over {n_repeats} repeated points): "
              + ("not measured yet" if spread is None else f"{spread:.2e}"), "",
              f"| a | b | why | KID(a) - KID(b) [95% paired CI] | rate a / b | {head} |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        if "missing" in c:
            lines.append(f"| {c['a']} | {c['b']} | {c['why']} | – | – | {c['verdict']} |")
            continue
        ratio = "–" if c["rate_ratio"] is None else f"{c['rate_ratio']:.2f}"
        lines.append(f"| {c['a']} | {c['b']} | {c['why']} | {c['kid_diff']:.2e} [{c['kid_low']:.2e}, "
                     f"{c['kid_high']:.2e}] | {ratio} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def write_comparison(results: dict[str, CommittedResult], pairs: Sequence[Pair], repeats: Sequence[tuple[str, str]],
                     reference: np.ndarray, out_dir: str | Path, n_boot: int = 1000,
                     decided_by: Optional[str] = None) -> dict[str, Any]:
    """table.md, comparisons.md, summary.json and the two plots (KID against bits and against PSNR).

    `decided_by`: the file whose verdicts decide the study instead (a paired-seed report, `seeds.md`);
    comparisons.md then says at its top and in its verdict column that its single-seed rule is replaced."""
    import json
    from collections import Counter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = Counter(r.record["config"]["stage2"]["preset"] for r in results.values()).most_common(1)[0][0]
    rows = study_rows(results, base)
    comparisons = compare(results, pairs, reference, n_boot=n_boot)
    spread = seed_spread(results, repeats)
    for c in comparisons:
        c["verdict"] = verdict(c, spread)
    (out_dir / "table.md").write_text(markdown_table(rows) + "\n")
    (out_dir / "comparisons.md").write_text(comparisons_markdown(comparisons, spread, len(repeats), decided_by))
    summary = {"rows": rows, "comparisons": comparisons, "seed_spread": spread}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    plot(rows, out_dir / "kid_vs_bits.png", "bits_per_pixel", "bits/pixel (L_z, held-out)", log_x=True)
    plot(rows, out_dir / "kid_vs_psnr.png", "psnr", "reconstruction PSNR (dB)")
    return summary
