"""`torchrun ... -m assets.pipes_entry JOB.json`: one training or extraction step on every rank.

Rank 0 alone opens Dagster Pipes (the default message reader expects one writer): it streams the
step's log lines and reports the materialization once, at the end, after the final checkpoint or
the store's completion. A group restarted by `torchrun --max-restarts` opens Pipes again and
resumes from the last checkpoint. The library (ul_pipeline) never sees Dagster. The job file holds
no secret: storage credentials are named in it and read from this process's environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ul_pipeline import config as config_lib
from ul_pipeline import distributed
from ul_pipeline.data.storage import credentials_from_env


def run_step(job: dict, log, progress) -> dict:
    """Run the job's stage on this rank; returns the metadata rank 0 reports (JSON-able)."""
    from assets.progress import TrainingLog
    from ul_pipeline.lifecycle import encode_latents, run_stage1, run_stage2

    cfg, stage = config_lib.from_dict(job["config"]), job["stage"]
    so = credentials_from_env(job.get("storage_options"), f"job file {job.get('path')}")
    callbacks = [TrainingLog(log, stage)] if log is not None else []
    if stage == "encode":
        store = encode_latents(job["stage1_checkpoint"], job["shards_url"], job["store_url"], cfg=cfg,
                               storage_options=so, store_storage_options=so, progress=progress,
                               warn=log.warning if log is not None else None)
        return {"world_size": distributed.world().size, "num_samples": int(store.meta["num_samples"]),
                "encode_seconds": float(store.meta.get("encode_seconds") or 0.0),
                "complete": bool(store.meta["complete"])}
    if stage == "stage1":
        result = run_stage1(cfg, job["shards_url"], job["run_dir"], storage_options=so, callbacks=callbacks)
    elif stage == "stage2":
        result = run_stage2(cfg, job["store_url"], job["run_dir"], expect_encoder_sha256=job.get("encoder_sha256"),
                            storage_options=so, callbacks=callbacks)
    else:
        raise ValueError(f"{job.get('path')}: unknown stage {stage!r} (stage1 | encode | stage2)")
    last = result.history[-1] if result.history else {}
    return {"world_size": distributed.world().size, "samples_seen": result.state.samples_seen,
            "train_seconds": result.train_seconds, "reported_by_rank": distributed.world().rank,
            **{f"final_{k}": float(v) for k, v in last.items() if k in ("loss_nats", "bits_per_pixel", "samples_per_s")}}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: torchrun ... -m assets.pipes_entry JOB.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        job = {**json.loads(path.read_text()), "path": str(path)}
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"pipes entry: cannot read job file {path}: {e}") from None
    try:
        if not distributed.env_world().is_main:
            run_step(job, None, None)
            return 0
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            from assets.progress import progress_log

            reported = run_step(job, pipes.log, progress_log(pipes.log, job["stage"]))
            pipes.report_asset_materialization(metadata=reported)  # once, after the final checkpoint
        return 0
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
