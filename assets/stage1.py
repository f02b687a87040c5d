"""ul_autoencoder: the Stage-1 checkpoint (encoder, prior, decoder trained together), and its gate."""

import time

import torch
from dagster import (AssetCheckExecutionContext, AssetCheckResult, AssetExecutionContext, DataVersion,
                     MaterializeResult, MetadataValue, asset, asset_check)

from assets.artifacts import ExperimentArtifacts, resolve
from assets.data import dataset_shards
from assets.launch import launcher_for
from assets.metadata import config_md, floats, image_md, path_md, training_curves_png
from assets.partitions import EXPERIMENTS, GPU_POOL
from assets.plan import log_plan
from assets.progress import TrainingLog
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.lifecycle import run_stage1
from ul_pipeline.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from ul_pipeline.versioning import stage_code_version

STAGE1_METRICS = ("loss_nats", "latent_nats", "decoder_nats", "prior_terminal_nats", "bits_per_pixel",
                  "bits_per_image", "bits_per_latent_dim")


def checkpoint_metadata(path, ckpt: dict, sha256: str, metrics: tuple[str, ...]) -> dict:
    """Path, hash (`read_checkpoint`'s: of the bytes `ckpt` came from), progress and the last logged losses."""
    history = ckpt.get("history") or [{}]
    return {"checkpoint": path_md(path), "sha256": sha256, "samples_seen": int(ckpt["samples_seen"]),
            "step": int(ckpt["step"]), "complete": bool(ckpt.get("complete")),
            "code_version": str(ckpt.get("code_version")),
            "stage_code_version": str(ckpt.get("stage_code_version")), **floats(history[-1], metrics)}


def reused_stage1(art: ExperimentArtifacts) -> dict:
    """Metadata of the owner's complete Stage-1 checkpoint; a clear failure when it is absent or unfinished."""
    path = art.stage1_checkpoint
    if not path.exists():
        raise art.missing("Stage-1 checkpoint", f"{path} does not exist", "ul_autoencoder")
    ckpt, sha256 = read_checkpoint(path, kind="stage1")
    if not ckpt.get("complete"):
        raise art.missing("Stage-1 checkpoint", f"{path} is unfinished (samples_seen {ckpt['samples_seen']} of "
                          f"{ckpt['config']['stage1']['train']['total_samples']})", "ul_autoencoder")
    return {**checkpoint_metadata(path, ckpt, sha256, STAGE1_METRICS), "reused_from": art.owner,
            "note": MetadataValue.text(art.reuse_note("Stage-1 checkpoint", path))}


@asset(group_name="stage1", partitions_def=EXPERIMENTS, deps=[dataset_shards], kinds={"pytorch"},
       code_version=stage_code_version("stage1"), pool=GPU_POOL)
def ul_autoencoder(context: AssetExecutionContext, storage: StorageResource, compute: ComputeResource,
                   experiment_config: ExperimentConfigResource) -> MaterializeResult:
    """Stage-1 checkpoint: encoder, diffusion prior and diffusion decoder trained together."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    if art.reused:
        context.log.info(art.reuse_note("Stage-1 checkpoint", art.stage1_checkpoint))
        meta = reused_stage1(art)
        return MaterializeResult(metadata={**meta, "config": config_md(art.cfg)},
                                 data_version=DataVersion(meta["sha256"]))
    choice = art.stage1_choice
    context.log.info(f"Stage 1: {choice.describe()}")
    planned = log_plan(context, art.cfg, "stage1", compute)
    t0 = time.perf_counter()
    launcher = launcher_for(compute, art.cfg)
    if launcher is not None:  # torchrun (local or on Slurm) through Pipes; rank 0 reports
        reported = launcher.run(context, "stage1", art.cfg, art.stage1_dir, shards_url=art.shards_url,
                                     run_dir=str(art.stage1_dir), storage_options=art.storage_options)
        checkpoint = art.stage1_dir / "last.pt"
    else:
        reported = {}
        checkpoint = run_stage1(art.cfg, art.shards_url, art.stage1_dir, storage_options=art.storage_options,
                                callbacks=[TrainingLog(context.log, "stage1")]).checkpoint
    ckpt, sha256 = read_checkpoint(checkpoint, kind="stage1")
    curves = training_curves_png(ckpt["history"], art.stage1_dir / "training_curves.png",
                                 f"{art.experiment}: Stage 1 (encoder + prior + decoder)")
    meta = checkpoint_metadata(checkpoint, ckpt, sha256, STAGE1_METRICS)
    return MaterializeResult(metadata={
        **meta, "wall_seconds": time.perf_counter() - t0, "run_status": choice.status,
        "run_note": MetadataValue.text(choice.describe()),
        "tensorboard_dir": path_md(checkpoint.parent / "tensorboard"),
        "training_curves": image_md(curves, "loss and bits/pixel"), "training_curves_png": path_md(curves),
        "config": config_md(art.cfg), **reported, **planned}, data_version=DataVersion(meta["sha256"]))


@asset_check(asset=ul_autoencoder, blocking=True, partitions_def=EXPERIMENTS)
def weights_finite(context: AssetCheckExecutionContext, storage: StorageResource, compute: ComputeResource,
                   experiment_config: ExperimentConfigResource) -> AssetCheckResult:
    """Every weight of the Stage-1 checkpoint (raw and EMA) is finite."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    try:
        ckpt = load_checkpoint(art.stage1_checkpoint, kind="stage1")
    except CheckpointError as e:
        return AssetCheckResult(passed=False, description=str(e))
    bad, count = [], 0
    for part in ("model", "ema"):
        for name, tensor in ckpt[part].items():
            if tensor.is_floating_point():
                count += 1
                if not bool(torch.isfinite(tensor).all()):
                    bad.append(f"{part}.{name}")
    return AssetCheckResult(passed=not bad, metadata={"checkpoint": path_md(art.stage1_checkpoint),
                                                      "tensors_checked": count,
                                                      "non_finite": MetadataValue.json(bad[:20])},
                            description=f"non-finite weights in {', '.join(bad[:5])}" if bad else None)
