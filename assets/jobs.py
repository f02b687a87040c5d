"""Asset jobs (smoke for CI, demo, full for any experiment, sweep_study for a sweep) and a batch schedule."""

from dagster import (AssetSelection, DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext,
                     define_asset_job, in_process_executor, schedule)

from assets.partitions import EXPERIMENTS

EVERYTHING = AssetSelection.all() - AssetSelection.assets("study")  # the five per-experiment assets, with checks
PARTITION_TAG = "dagster/partition"


def chain_job(experiment: str, description: str):
    """The whole chain on one experiment's partition, in one process (the steps run one after another anyway:
    no per-step interpreter start-up, ~30 s saved on a small CPU)."""
    return define_asset_job(experiment, selection=EVERYTHING, partitions_def=EXPERIMENTS,
                            run_tags={PARTITION_TAG: experiment}, executor_def=in_process_executor,
                            description=description)


smoke_job = chain_job("smoke", "The whole chain on the `smoke` experiment (CI, a few minutes on CPU; numbers are "
                               "meaningless).")
demo_job = chain_job("demo", "The whole chain on the `demo` experiment (Fashion-MNIST 32x32 with evaluation).")
smoke_video_job = chain_job("smoke_video", "The whole chain on `smoke_video` (Moving Fashion-MNIST clips, CI; numbers "
                                           "are meaningless).")
demo_video_job = chain_job("demo_video", "The whole chain on `demo_video` (Moving Fashion-MNIST 16x32x32 clips, frame "
                                         "prediction, FVD).")
smoke_t2i_job = chain_job("smoke_t2i", "The whole text-to-image chain on `smoke_t2i` (the emoji fixture, CI; numbers "
                                       "are meaningless).")
demo_t2i_job = chain_job("demo_t2i", "The whole chain on `demo_t2i` (Twemoji 32x32 RGB with their names: a "
                                     "cross-attention text model, evaluated on the held-out captions).")

full_job = define_asset_job(
    "full", selection=EVERYTHING, partitions_def=EXPERIMENTS,
    description="The whole chain for any experiment: choose the partition at launch "
                "(CLI: --tags '{\"dagster/partition\": \"NAME\"}').")

study_job = define_asset_job(
    "sweep_study", selection=AssetSelection.assets("study"), executor_def=in_process_executor,  # partitions: SWEEPS
    description="A sweep's study table and picture from its points' evaluations (partition: the sweep's name).")

BATCH_EXPERIMENTS = ("demo",)  # experiments the nightly batch runs through `full`


@schedule(name="nightly_batch", job=full_job, cron_schedule="0 2 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED)
def nightly_batch(context: ScheduleEvaluationContext):
    """Nightly at 02:00 UTC, one `full` run per batch experiment (finished stages resume as no-ops). Off by default."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for experiment in BATCH_EXPERIMENTS:
        yield RunRequest(run_key=f"{experiment}-{day}", partition_key=experiment)
