"""Run a sweep point by point through the `full` job, skipping points already evaluated, then its study.

    python -m ul_pipeline_dagster sweep_runner NAME        # NAME: configs/experiments/NAME.yaml with a `sweep:` section
    python -m ul_pipeline_dagster sweep_runner NAME --results results/NAME   # and keep finished points in the repository

A point is done when `{runs}/{point}/evaluation/metrics.json` exists, records the hash of the point's
current config (`config_sha256`, compute.* aside), and its `stage1_sha256` and `base_sha256` are the
sha256 of the point's current checkpoints (which carry the stages' code versions); it is then skipped. Any other
point runs the `full` job in this process (unfinished stages resume from their checkpoints). So a
killed sweep, run again, goes on with its first unfinished point. A failed point does not stop the
others, but the study (job `sweep_study`) is materialised only when every point succeeded.

With `--results DIR`, each finished point is also written to `DIR/<label>/` (its evaluation,
sample features and grids; ul_pipeline/evaluation/results.py) for committing, and a point whose
committed result matches its config and stage code versions is skipped even on a fresh machine
with no checkpoints; the study then reads the committed results. Runs
are recorded in $DAGSTER_HOME when it is set, else in a throw-away instance. Points run one after
another, so points that share a shard set never write it at the same time.

A sweep with a `seeds:` plan (ul_pipeline/config/seeds.py) has a point per arm and study seed; a
normal-prior seed point whose rate target is its UL point's measured rate waits until that point's
result is committed (the UL point runs first). `--commit` commits each finished point's result
folder at once (git, only that folder), so a long study is saved point by point. The report then
also judges the sweep's `paired` comparisons over the seeds (seeds.md, seeds.json, paired_seeds.png).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from dagster import DagsterInstance, Definitions

from assets.artifacts import ExperimentArtifacts, resolve
from ul_pipeline.config import CONFIG_DIR, ConfigError
from ul_pipeline.config.sweeps import load_sweep
from ul_pipeline.config import to_dict
from assets.sweep_commit import commit_result, uncommitted
from assets.sweep_results import code_versions, committed_reason, rate_source_reason, report_results
from ul_pipeline.evaluation.results import ResultError, result_config, save_result
from ul_pipeline.evaluation.report_files import ReportWriteError
from ul_pipeline.train.checkpoint import file_sha256
from ul_pipeline.versioning import json_sha256


def pending_reason(art: ExperimentArtifacts) -> Optional[str]:
    """Why the point must run, or None when its evaluation was made from its current config on its current
    checkpoints (whose hashes cover the stages' code and config: a changed one trains in a new run folder)."""
    metrics_path = art.evaluation_dir / "metrics.json"
    if not metrics_path.exists():
        return f"no {metrics_path}"
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("config_sha256") != json_sha256(result_config(to_dict(art.cfg))):
        return f"{metrics_path} was made from another config (or before evaluations recorded theirs)"
    for key, checkpoint in (("stage1_sha256", art.stage1_checkpoint), ("base_sha256", art.base_checkpoint)):
        if not checkpoint.exists():
            return f"no {checkpoint}"
        if metrics.get(key) != file_sha256(checkpoint):
            return f"{metrics_path} has another {key} than {checkpoint}"
    return None


def export_result(results_dir: str, point, art: ExperimentArtifacts, seconds: float) -> Optional[str]:
    """Copy a finished point's evaluation into results_dir/<label>/ (result.json written last); returns why it was
    not written (None when it was): an evaluation made from another config than the point's current one (edited, or
    a rate target re-committed, while the point ran) would be recorded under the current config's hash."""
    why = pending_reason(art)
    if why is not None:
        return f"result not written: {why}; run the point again"
    metrics = json.loads((art.evaluation_dir / "metrics.json").read_text())
    parts = [metrics.get(k) for k in ("stage1_train_seconds", "encode_seconds", "stage2_train_seconds", "eval_seconds")]
    wall = sum(p for p in parts if isinstance(p, (int, float))) if any(parts) else seconds
    save_result(results_dir, point.label, point.key, to_dict(art.cfg), code_versions(), metrics,
                art.evaluation_dir, wall)
    return None


def export(results_dir: str, point, art: ExperimentArtifacts, seconds: float, commit: bool, tag: str,
           log: Callable[[str], None]) -> Optional[str]:
    """export_result, logged, then the commit when asked; returns why nothing was written (None when it was)."""
    why = export_result(results_dir, point, art, seconds)
    if why is not None:
        log(f"{tag}: WARNING: {why}")
        return why
    log(f"{tag}: result written to {results_dir}/{point.label}" + ("" if commit else " (commit it)"))
    if commit:
        commit_result(results_dir, point, log)
    return None


def check_seed_results(loaded, results_dir: Optional[str], config_dir) -> None:
    """A seeds plan reads rates from its own results folder: --results must be that folder."""
    plan = loaded.seeds
    if plan is None or not plan.rate_of or results_dir is None:
        return
    want = (Path(config_dir).resolve().parent / plan.results).resolve()
    if Path(results_dir).resolve() != want:
        raise ConfigError(f"{loaded.origin}: sweep.seeds.results is {want}, but --results is {results_dir}: the rate "
                          "targets are read from the first, so results must be written there")


def training_reference(sweep, storage, experiment_config, compute, log: Callable[[str], None] = print):
    """Inception features of the first eval.kid_reference_size training images of the sweep's shards (cached).

    On a fresh clone neither exists: the shard set is written first, from the configured source as the
    dataset_shards asset writes it (same data, same manifest), then the features are computed once and
    cached beside it, so `--report-only` needs nothing but the committed results."""
    from types import SimpleNamespace

    from assets.progress import progress_log
    from ul_pipeline.data import load_split_tensor, read_manifest
    from ul_pipeline.data.storage import creation_lock
    from ul_pipeline.evaluation.fid import InceptionFeatures
    from ul_pipeline.evaluation.fid_reference import reference_features
    from ul_pipeline.lifecycle import make_shards
    from ul_pipeline.train.loop import resolve_device

    art = resolve(sweep.points[0].key, storage, experiment_config, compute)
    k = int(art.cfg.eval.kid_reference_size)
    if not k:
        raise ConfigError(f"sweep {sweep.name}: compare needs eval.kid_reference_size > 0 (KID's reference)")
    url, options, logger = art.shards_url, art.storage_options, SimpleNamespace(info=log)
    try:
        manifest = read_manifest(url, options)
    except FileNotFoundError:
        with creation_lock(url, f"shard set {url}", options, log=log):  # a run may be writing it
            try:
                manifest = read_manifest(url, options)
            except FileNotFoundError:
                log(f"no shard set at {url}: writing it from {art.cfg.data.source} (KID's training reference)")
                manifest = make_shards(art.cfg, url, storage_options=options,
                                       progress=progress_log(logger, "sharding"))
    images = load_split_tensor(url, "train", storage_options=options, limit=k)[0]
    return reference_features(images, InceptionFeatures(resolve_device(compute.device or "auto")), url,
                              split="train", storage_options=options, manifest_sha256=manifest.sha256, log=log,
                              progress=progress_log(logger, f"reference features of {len(images)} images"))


def write_report(sweep, results_dir: str, report_dir: str, res, log: Callable[[str], None]) -> bool:
    """The comparison of the committed results that stand (table, paired intervals, verdicts, plots) in report_dir.

    Stale results are left out and named; a broken one stops it (ResultError names the file). The files
    are made in a temporary folder and replace report_dir's together (report_files.py), so a failed or
    killed run leaves the last report whole."""
    import numpy as np

    from ul_pipeline.evaluation.comparison import Pair, write_comparison
    from ul_pipeline.evaluation.report_files import staged_report, writable

    results = report_results(sweep, results_dir, res[1].config_dir or CONFIG_DIR, log)
    if not results:
        log(f"sweep {sweep.name}: no committed results in {results_dir}; no report")
        return False
    writable(report_dir)  # a read-only report folder stops here, not after the reference and the KIDs
    reference = training_reference(sweep, *res, log=log) if sweep.compare or sweep.seeds else np.zeros((0, 1))
    from ul_pipeline.evaluation.seed_report import PAGE, write_seed_report

    with staged_report(report_dir) as staging:
        paired = sweep.seeds is not None and bool(sweep.seeds.paired)
        summary = write_comparison(results, [Pair(*c) for c in sweep.compare], sweep.repeats, reference, staging,
                                   decided_by=PAGE if paired else None)
        seeds = None
        if paired:
            committed = [p.parent.name for p in Path(results_dir).glob("*/result.json")]
            seeds = write_seed_report(sweep.seeds, results, reference, staging, committed)
    log(f"sweep {sweep.name}: report of {len(results)} of {len(sweep.points)} points in {report_dir} "
        f"(table.md, comparisons.md, kid_vs_bits.png, kid_vs_psnr.png)")
    rule = f" (single-seed rule, replaced by {PAGE})" if paired else ""
    for c in summary["comparisons"]:
        log(f"  {c['a']} vs {c['b']}{rule}: {c['verdict']}")
    if seeds is not None:
        log(f"sweep {sweep.name}: paired seeds in {report_dir} (seeds.md, seeds.json, paired_seeds.png)")
        for c in seeds["comparisons"]:
            log(f"  {c['a']} vs {c['b']} over seeds: {c['verdict']}")
    return len(results) == len(sweep.points)


def run_sweep(sweep: str, defs: Definitions, instance: DagsterInstance, log: Callable[[str], None] = print,
              results_dir: Optional[str] = None, report_dir: Optional[str] = None,
              only: Optional[list[str]] = None, commit: bool = False) -> bool:
    """Each point of `sweep` in order (done ones skipped), then its study; True when all succeeded.

    `only`: run just these point labels (in the sweep's order) and no study, e.g. to run two points in
    two processes at once; the study is made by a later run without `only`. `commit`: git-commit each
    finished point's result folder (needs `results_dir`)."""
    storage, experiment_config, compute = (defs.resources[k] for k in ("storage", "experiment_config", "compute"))
    config_dir = experiment_config.config_dir or CONFIG_DIR
    loaded = load_sweep(sweep, config_dir)
    check_seed_results(loaded, results_dir, config_dir)
    points = loaded.points
    if only:
        unknown = sorted(set(only) - {p.label for p in points})
        if unknown:
            raise ConfigError(f"sweep {sweep}: no point(s) {', '.join(unknown)}; "
                              f"its points: {', '.join(p.label for p in points)}")
        points = [p for p in points if p.label in only]
    full, t_sweep, failed = defs.resolve_job_def("full"), time.perf_counter(), []
    for i, point in enumerate(points, 1):
        tag = f"[{i}/{len(points)}] {point.key}"
        if point.waits_for:  # a rate target from a seed point that may have finished meanwhile: look again
            point = next(p for p in load_sweep(sweep, config_dir).points if p.key == point.key)
            if point.waits_for:
                log(f"{tag}: waits for {point.waits_for}'s committed result (its rate target); not run")
                failed.append(point.key)
                continue
        if results_dir is not None:
            why = committed_reason(results_dir, point, experiment_config.config_dir or CONFIG_DIR)
            if why is None:
                log(f"{tag}: committed result in {results_dir}/{point.label} matches its config and code; skipped")
                if commit and uncommitted(results_dir, point):  # written by a run killed before its commit
                    commit_result(results_dir, point, log)
                continue
            log(f"{tag}: {why}")
        art = resolve(point.key, storage, experiment_config, compute)
        reason = pending_reason(art)
        if reason is None:
            log(f"{tag}: already evaluated on its current checkpoints; skipped")
            if results_dir is not None and export(results_dir, point, art, 0.0, commit, tag, log) is not None:
                failed.append(point.key)
            continue
        waiting = rate_source_reason(load_sweep(sweep, config_dir), point, config_dir) if point.rate_from else None
        if waiting is not None:  # its rate target would be a result the report leaves out, soon replaced
            log(f"{tag}: {waiting}; not run")
            failed.append(point.key)
            continue
        log(f"{tag}: running job full ({reason})")
        t0 = time.perf_counter()
        result = full.execute_in_process(partition_key=point.key, instance=instance, raise_on_error=False)
        status = "done" if result.success else "FAILED"
        log(f"{tag}: {status} in {time.perf_counter() - t0:.1f} s (run {result.run_id})")
        if not result.success:
            failed.append(point.key)
        elif results_dir is not None:
            art = resolve(point.key, storage, experiment_config, compute)  # afresh: what the point is now
            if export(results_dir, point, art, time.perf_counter() - t0, commit, tag, log) is not None:
                failed.append(point.key)
    if failed:
        log(f"sweep {sweep}: {len(failed)} point(s) failed ({', '.join(failed)}); study not materialised. "
            f"Fix them and run again: finished points are skipped.")
        return False
    if only:
        log(f"sweep {sweep}: {', '.join(only)} done; run without --points for the study")
        return True
    if results_dir is not None:  # the study from committed results: also on a machine without the runs
        return write_report(loaded, results_dir, report_dir or f"docs/{sweep}", (storage, experiment_config, compute),
                            log)
    result = defs.resolve_job_def("sweep_study").execute_in_process(partition_key=sweep, instance=instance,
                                                                    raise_on_error=False)
    where = storage.run_dir(sweep, "study")
    log(f"sweep {sweep}: {len(points)} points in {time.perf_counter() - t_sweep:.1f} s; study "
        + (f"in {where} (study.parquet, study.png)" if result.success else f"FAILED (run {result.run_id})"))
    return result.success


def instance_from_env() -> DagsterInstance:
    """The $DAGSTER_HOME instance when set (runs persist, the UI shows them), else an ephemeral one."""
    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ul_pipeline_dagster sweep_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="the sweep's name, e.g. paper_trends")
    parser.add_argument("--results", help="folder of committed point results (e.g. results/NAME)")
    parser.add_argument("--report", help="with --results: where the comparison goes (default docs/NAME)")
    parser.add_argument("--points", help="comma-separated point labels: run only these, and no study")
    parser.add_argument("--commit", action="store_true",
                        help="with --results: git-commit each finished point's result folder as it finishes")
    parser.add_argument("--report-only", action="store_true",
                        help="with --results: write the comparison of the points committed so far; run nothing")
    args = parser.parse_args(argv)
    if args.commit and not args.results:
        parser.error("--commit needs --results")
    from assets.definitions import defs

    with instance_from_env() as instance:
        try:
            if args.report_only:
                if not args.results:
                    parser.error("--report-only needs --results")
                loaded = load_sweep(args.sweep, defs.resources["experiment_config"].config_dir or CONFIG_DIR)
                res = tuple(defs.resources[k] for k in ("storage", "experiment_config", "compute"))
                write_report(loaded, args.results, args.report or f"docs/{args.sweep}", res,
                             lambda msg: print(msg, flush=True))
                return 0
            ok = run_sweep(args.sweep, defs, instance, log=lambda msg: print(msg, flush=True),
                           results_dir=args.results, report_dir=args.report,
                           only=args.points.split(",") if args.points else None, commit=args.commit)
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
        except (ResultError, ReportWriteError) as e:  # an unreadable committed result, an unwritable report
            print(f"error: {e}", file=sys.stderr)  # folder: the message names the path
            return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
