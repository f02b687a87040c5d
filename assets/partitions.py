"""Partitions: one per experiment in configs/experiments/ (a sweep file gives one per point), and one per sweep."""

import warnings
from pathlib import Path

from dagster import PreviewWarning, StaticPartitionsDefinition

from ul_pipeline.config import CONFIG_DIR, experiment_names
from ul_pipeline.config.sweeps import sweep_names, sweep_points

# asset checks are partitioned like their assets, so a check result belongs to one experiment
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning)


def sweep_of_point(config_dir: Path | str = CONFIG_DIR) -> dict[str, str]:
    """{point key: sweep name} for every sweep point (the study's partition mapping)."""
    return {point: sweep for sweep in sweep_names(config_dir) for point in sweep_points(sweep, config_dir)}


# Training and encoding share the accelerator: `dagster instance concurrency set ul_gpu 1` runs one of them at a
# time over all runs (unset, the pool limits nothing). A pool counts every partition alike, so it cannot stop two
# runs of ONE experiment (a schedule overlapping a manual run, a double click, a backfill) while letting the others
# through: the run-folder lock (ul_pipeline.train.run_lock) does, by failing the second training run at once.
GPU_POOL = "ul_gpu"
EXPERIMENTS = StaticPartitionsDefinition(experiment_names())  # plain experiments and sweep points
SWEEPS = StaticPartitionsDefinition(sweep_names())  # the study's partitions
SWEEP_OF_POINT = sweep_of_point()
