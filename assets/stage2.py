"""base_model: the Stage-2 checkpoint, a diffusion model trained on the frozen latents."""

import time

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from assets.artifacts import resolve
from assets.latents import latent_store
from assets.launch import launcher_for
from assets.metadata import config_md, image_md, path_md, training_curves_png
from assets.partitions import EXPERIMENTS, GPU_POOL
from assets.plan import log_plan
from assets.progress import TrainingLog
from assets.stage1 import checkpoint_metadata, ul_autoencoder
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.lifecycle import run_stage2
from ul_pipeline.train.checkpoint import read_checkpoint
from ul_pipeline.versioning import stage_code_version

STAGE2_METRICS = ("loss_nats", "elbo_diffusion_nats")


@asset(group_name="stage2", partitions_def=EXPERIMENTS, deps=[latent_store, ul_autoencoder], kinds={"pytorch"},
       code_version=stage_code_version("stage2"), pool=GPU_POOL)
def base_model(context: AssetExecutionContext, storage: StorageResource, compute: ComputeResource,
               experiment_config: ExperimentConfigResource) -> MaterializeResult:
    """Stage-2 checkpoint: the base model, a sigmoid-weighted diffusion model on the cached latents."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    encoder_sha256 = art.encoder_sha256
    choice = art.stage2_choice
    context.log.info(f"Stage 2 on {art.latent_store_url}: {choice.describe()}")
    planned = log_plan(context, art.cfg, "stage2", compute)
    t0 = time.perf_counter()
    launcher = launcher_for(compute, art.cfg)
    if launcher is not None:  # torchrun (local or on Slurm) through Pipes; rank 0 reports
        reported = launcher.run(context, "stage2", art.cfg, art.stage2_dir, store_url=art.latent_store_url,
                                     run_dir=str(art.stage2_dir), encoder_sha256=encoder_sha256,
                                     storage_options=art.storage_options)
        checkpoint = art.stage2_dir / "last.pt"
    else:
        reported = {}
        checkpoint = run_stage2(art.cfg, art.latent_store_url, art.stage2_dir, expect_encoder_sha256=encoder_sha256,
                                storage_options=art.storage_options,
                                callbacks=[TrainingLog(context.log, "stage2")]).checkpoint
    ckpt, sha256 = read_checkpoint(checkpoint, kind="stage2")
    curves = training_curves_png(ckpt["history"], art.stage2_dir / "training_curves.png",
                                 f"{art.experiment}: Stage 2 (base model)")
    extra = {"latents_from": art.owner} if art.reused else {}
    meta = checkpoint_metadata(checkpoint, ckpt, sha256, STAGE2_METRICS)
    return MaterializeResult(data_version=DataVersion(meta["sha256"]), metadata={
        **meta, **extra, **reported, "run_status": choice.status, "run_note": MetadataValue.text(choice.describe()),
        "latent_store_url": path_md(art.latent_store_url), "encoder_sha256": encoder_sha256,
        "wall_seconds": time.perf_counter() - t0,
        "tensorboard_dir": path_md(checkpoint.parent / "tensorboard"),
        "training_curves": image_md(curves, "loss (nats)"), "training_curves_png": path_md(curves),
        "config": config_md(art.cfg), **planned})
