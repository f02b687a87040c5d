"""Run a sweep point by point through the `full` job, skipping points already evaluated, then its study.

    python -m assets.sweep_runner NAME        # NAME: configs/experiments/NAME.yaml with a `sweep:` section

A point is done when `{runs}/{point}/evaluation/metrics.json` exists and its `stage1_sha256` and
`base_sha256` are the sha256 of the point's current checkpoints; it is then skipped. Any other
point runs the `full` job in this process (unfinished stages resume from their checkpoints). So a
killed sweep, run again, goes on with its first unfinished point. A failed point does not stop the
others, but the study (job `sweep_study`) is materialised only when every point succeeded. Runs
are recorded in $DAGSTER_HOME when it is set, else in a throw-away instance. Points run one after
another, so points that share a shard set never write it at the same time.
"""

import argparse
import json
import os
import sys
import time
from typing import Callable, Optional

from dagster import DagsterInstance, Definitions

from assets.artifacts import ExperimentArtifacts, resolve
from ul_pipeline.config import CONFIG_DIR, ConfigError
from ul_pipeline.config.sweeps import load_sweep
from ul_pipeline.train.checkpoint import file_sha256


def pending_reason(art: ExperimentArtifacts) -> Optional[str]:
    """Why the point must run, or None when its evaluation was made on its current checkpoints."""
    metrics_path = art.evaluation_dir / "metrics.json"
    if not metrics_path.exists():
        return f"no {metrics_path}"
    metrics = json.loads(metrics_path.read_text())
    for key, checkpoint in (("stage1_sha256", art.stage1_checkpoint), ("base_sha256", art.base_checkpoint)):
        if not checkpoint.exists():
            return f"no {checkpoint}"
        if metrics.get(key) != file_sha256(checkpoint):
            return f"{metrics_path} has another {key} than {checkpoint}"
    return None


def run_sweep(sweep: str, defs: Definitions, instance: DagsterInstance, log: Callable[[str], None] = print) -> bool:
    """Each point of `sweep` in order (done ones skipped), then its study; True when all succeeded."""
    storage, experiment_config, compute = (defs.resources[k] for k in ("storage", "experiment_config", "compute"))
    points = load_sweep(sweep, experiment_config.config_dir or CONFIG_DIR).points
    full, t_sweep, failed = defs.resolve_job_def("full"), time.perf_counter(), []
    for i, point in enumerate(points, 1):
        tag = f"[{i}/{len(points)}] {point.key}"
        reason = pending_reason(resolve(point.key, storage, experiment_config, compute))
        if reason is None:
            log(f"{tag}: already evaluated on its current checkpoints; skipped")
            continue
        log(f"{tag}: running job full ({reason})")
        t0 = time.perf_counter()
        result = full.execute_in_process(partition_key=point.key, instance=instance, raise_on_error=False)
        status = "done" if result.success else "FAILED"
        log(f"{tag}: {status} in {time.perf_counter() - t0:.1f} s (run {result.run_id})")
        if not result.success:
            failed.append(point.key)
    if failed:
        log(f"sweep {sweep}: {len(failed)} point(s) failed ({', '.join(failed)}); study not materialised. "
            f"Fix them and run again: finished points are skipped.")
        return False
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
    parser = argparse.ArgumentParser(prog="python -m assets.sweep_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="the sweep's name, e.g. paper_trends")
    args = parser.parse_args(argv)
    from assets.definitions import defs

    with instance_from_env() as instance:
        try:
            ok = run_sweep(args.sweep, defs, instance, log=lambda msg: print(msg, flush=True))
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
