"""Which committed results of a sweep stand: the runner skips a point whose result does, the report uses them.

A committed result (ul_pipeline/evaluation/results.py) stands for its point when it was made from the
point's current config and stage code versions (or ones declared equivalent). `report_results` picks,
for the report, the sweep's committed results that stand and are readable; it says which it leaves out
and why (a stale one is a different experiment than its label now names, so it must not enter a verdict),
and names the folders of results_dir that are no point of the sweep.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Optional

from ul_pipeline.config import load_config, to_dict
from ul_pipeline.config.sweeps import load_sweep
from ul_pipeline.evaluation.results import (RESULT, CommittedResult, ResultError, load_features, load_result,
                                            stale_reasons)
from ul_pipeline.versioning import stage_code_version


def code_versions() -> dict[str, str]:
    """The stage code versions a committed result must match."""
    return {stage: stage_code_version(stage) for stage in ("stage1", "encode", "stage2")}


def committed_reason(results_dir: str, point, config_dir, committed: Optional[CommittedResult] = None
                     ) -> Optional[str]:
    """Why the point's committed result cannot stand (None when it can); 'no committed result' when absent."""
    committed = committed or load_result(results_dir, point.label)
    if committed is None:
        return "no committed result"
    reasons = stale_reasons(committed, to_dict(load_config(point.key, config_dir=config_dir)), code_versions())
    return "; ".join(reasons) if reasons else None


def rate_source_reason(sweep, point, config_dir) -> Optional[str]:
    """Why a seed point whose rate target is another point's committed rate may not train yet (None when it may):
    that result is stale, so the report leaves it out and a run of its point will replace the rate."""
    if not point.rate_from:
        return None
    source = next(p for p in sweep.points if p.label == point.rate_from)
    if source.waits_for:  # a chain of rate targets: the source's own is not committed yet
        return f"waits for {source.label}, which waits for {source.waits_for}'s committed result"
    results = Path(config_dir).resolve().parent / sweep.seeds.results
    why = committed_reason(str(results), source, config_dir)
    if why is None:
        return None
    if point.waits_for or why == "no committed result":
        return f"waits for {source.label}'s committed result (its rate target)"
    return (f"waits for {source.label}: its committed result in {results}, this point's rate target, is stale "
            f"({why}); run {source.label} again first")


def report_results(sweep, results_dir: str, config_dir, log: Callable[[str], None]) -> dict[str, CommittedResult]:
    """{label: result} of the sweep's points whose committed result stands; where the sweep compares points,
    each one's features are checked (ResultError names a broken file before anything is written)."""
    sweep = load_sweep(sweep.origin, config_dir)  # afresh: a rate target may have been committed since it was read
    labels, out = {p.label for p in sweep.points}, {}
    for point in sweep.points:
        result = load_result(results_dir, point.label)
        if result is None:
            continue
        if point.waits_for:
            why = f"its rate target is {point.waits_for}'s committed result, which {sweep.seeds.results} lacks"
        else:
            why = committed_reason(results_dir, point, config_dir, result)
        if why is not None:
            log(f"sweep {sweep.name}: {result.folder} left out of the report, stale: {why}")
            continue
        out[point.label] = result
    needs_features = bool(sweep.compare or sweep.seeds)  # a sweep without comparisons reports metrics only
    shapes = {label: load_features(r).shape for label, r in out.items()} if needs_features else {}
    common = Counter(shapes.values()).most_common(1)[0][0] if shapes else None
    for label, shape in shapes.items():
        if shape != common:
            raise ResultError(f"{out[label].features_path}: features of shape {shape}, those of the other points "
                              f"{common}; restore it or run the point again")
    root = Path(results_dir)
    foreign = sorted(p.parent.name for p in root.glob(f"*/{RESULT}") if p.parent.name not in labels)
    if foreign:
        log(f"sweep {sweep.name}: {', '.join(foreign)} in {root} are no point of the sweep; not reported")
    return out
