"""The one wiring module: `dagster dev` (workspace.yaml) and `dagster job execute -m ul_pipeline_dagster` load `defs`
(through ul_pipeline_dagster.py, which binds this package by location so a user's own assets/ folder cannot shadow it)."""

from dagster import Definitions

from assets.data import dataset_shards
from assets.evaluation import evaluation, evaluation_checks
from assets.jobs import (demo_job, demo_t2i_job, demo_video_job, full_job, nightly_batch, smoke_job,
                         smoke_t2i_job, smoke_video_job, study_job)
from assets.latents import latent_store, latent_store_checks
from assets.stage1 import ul_autoencoder, weights_finite
from assets.stage2 import base_model
from assets.study import study
from resources import ComputeResource, ExperimentConfigResource, StorageResource

defs = Definitions(
    assets=[dataset_shards, ul_autoencoder, latent_store, base_model, evaluation, study],
    asset_checks=[weights_finite, latent_store_checks, evaluation_checks],
    jobs=[smoke_job, demo_job, full_job, study_job, smoke_video_job, demo_video_job, smoke_t2i_job, demo_t2i_job],
    schedules=[nightly_batch],
    resources={"storage": StorageResource(), "compute": ComputeResource(),
               "experiment_config": ExperimentConfigResource()},
)
