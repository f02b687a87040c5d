"""How much each paired-seed verdict rests on single seeds and on the machine they ran on (decides nothing).

    .venv/bin/python scripts/latent_study_sensitivity.py     # writes docs/latent_study/sensitivity.md

Reads only docs/latent_study/seeds.json (written by the study's report) and recomputes, with the rule's own
interval (`paired_seed_interval`), each comparison's interval
- over all its committed seeds (as the report does),
- leaving out one seed at a time: does 0 stay outside the interval without any single seed?
- per machine group: the seeds whose two arms both recorded the same CPU kernel level (`machine`, e.g.
  AVX2) against the rest (seeds run before points recorded their machine, or whose arms differ).
The rule was stated before the seeds ran and judges over all n seeds; these subsets were chosen after
seeing the results and are shown as a check on the verdicts, not as verdicts.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ul_pipeline.data.storage import write_file_atomic
from ul_pipeline.evaluation.paired_seeds import SeedInterval, paired_seed_interval

ROOT = Path(__file__).resolve().parents[1]


REST = "not recorded, or arms differ"


def interval(seeds: list[dict]) -> SeedInterval | str:
    """The rule's interval over these seeds, or why there is none (below 2 seeds; no noise measured)."""
    if len(seeds) < 2:
        return "fewer than 2 seeds"
    try:
        return paired_seed_interval([s["difference"] for s in seeds], [s["within_se"] for s in seeds])
    except ValueError as e:  # seeds that agree exactly with no within-seed SE: the rule gives no interval
        return f"no interval: {str(e).split(':')[0]}"


def machine(seed: dict) -> str:
    """A seed's machine group: the kernel level both arms recorded, else REST (the report writes 'a/b' where
    the arms differ, '?' for an arm that recorded none)."""
    m = seed.get("machine")
    return str(m) if m and "/" not in str(m) else REST


def cell(iv: SeedInterval | str) -> str:
    if isinstance(iv, str):
        return f"({iv})"
    side = "below 0" if iv.high < 0 else "above 0" if iv.low > 0 else "covers 0"
    return f"{iv.estimate * 1e3:+.2f} [{iv.low * 1e3:+.2f}, {iv.high * 1e3:+.2f}], {side}"


def rows(comparison: dict) -> list[tuple[str, str]]:
    seeds = comparison["seeds"]
    out = [(f"all {len(seeds)} seeds", cell(interval(seeds)))]
    for s in seeds:
        rest = [t for t in seeds if t is not s]
        out.append((f"without seed {s['seed']} ({s['difference'] * 1e3:+.2f})", cell(interval(rest))))
    groups: dict[str, list[dict]] = {}
    for s in seeds:
        groups.setdefault(machine(s), []).append(s)
    if len(groups) > 1:
        for name, members in groups.items():
            ids = ", ".join(str(s["seed"]) for s in members)
            out.append((f"machine {name}: seeds {ids}", cell(interval(members))))
    return out


def markdown(report: dict, source: str) -> str:
    lines = ["# Paired-seed verdicts: sensitivity (decides nothing)", "",
             f"From `{source}` by `scripts/latent_study_sensitivity.py`. KID(a) - KID(b) x1e3, the rule's 95% "
             "interval over the seeds named; subsets chosen after the results, shown as a check only.", ""]
    for c in report["comparisons"]:
        lines += [f"## {c['a']} vs {c['b']}", "", "| seeds | estimate [95% interval] x1e3 |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows(c)]
        lines.append("")
    return "\n".join(lines)


def load(path: Path) -> dict:
    """seeds.json, checked for what the page reads; SystemExit naming the file where it cannot be read."""
    try:
        report = json.loads(path.read_text())
    except OSError as e:
        raise SystemExit(f"{path}: cannot read it ({e.strerror or e}); the study's report writes it") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: not valid JSON ({e})") from None
    comparisons = report.get("comparisons") if isinstance(report, dict) else None
    if not isinstance(comparisons, list):
        raise SystemExit(f"{path}: no 'comparisons' list (is it the study report's seeds.json?)")
    for c in comparisons:
        seeds = c.get("seeds") if isinstance(c, dict) else None
        if not isinstance(seeds, list) or "a" not in c or "b" not in c:
            raise SystemExit(f"{path}: each comparison needs 'a', 'b' and a 'seeds' list, got {c!r}")
        for s in seeds:
            bad = [k for k in ("difference", "within_se") if not isinstance(s, dict) or not _number(s.get(k))]
            if bad or "seed" not in s or s["within_se"] < 0:
                raise SystemExit(f"{path}: {c['a']} vs {c['b']}: a seed needs 'seed', a number 'difference' "
                                 f"and a number 'within_se' >= 0, got {s!r}")
    return report


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def write(out: Path, text: str) -> None:
    """Write the page whole or not at all (`write_file_atomic`); SystemExit naming `out` where it cannot."""
    try:
        write_file_atomic(out, lambda f: f.write(text.encode()))
    except OSError as e:
        raise SystemExit(f"{out}: cannot write the page there ({e.strerror or e}); nothing was changed") from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds-json", type=Path, default=ROOT / "docs" / "latent_study" / "seeds.json")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "latent_study" / "sensitivity.md")
    args = p.parse_args(argv)
    report = load(args.seeds_json)
    source = args.seeds_json.relative_to(ROOT) if args.seeds_json.is_relative_to(ROOT) else args.seeds_json
    write(args.out, markdown(report, str(source)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
