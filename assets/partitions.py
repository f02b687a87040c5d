"""One partition per experiment in configs/experiments/."""

import warnings

from dagster import PreviewWarning, StaticPartitionsDefinition

from ul_pipeline.config import experiment_names

# asset checks are partitioned like their assets, so a check result belongs to one experiment
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning)

EXPERIMENTS = StaticPartitionsDefinition(experiment_names())
