"""latent_store: z_clean of the train split in a Zarr store, and the gates before Stage 2 reads it."""

import time

import numpy as np
from dagster import (AssetCheckExecutionContext, AssetCheckResult, AssetCheckSpec, AssetExecutionContext,
                     DataVersion, MaterializeResult, MetadataValue, asset, multi_asset_check)

from assets.artifacts import ExperimentArtifacts, resolve
from assets.data import dataset_shards
from assets.launch import launcher_for
from assets.metadata import config_md, path_md
from assets.partitions import EXPERIMENTS, GPU_POOL
from assets.progress import progress_log
from assets.stage1 import ul_autoencoder
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.latents.store import LatentStore, LatentStoreError, open_store
from ul_pipeline.data import read_manifest
from ul_pipeline.lifecycle import encode_latents
from ul_pipeline.versioning import json_sha256, short_hash, stage_code_version


def store_data_version(store: LatentStore) -> DataVersion:
    """What identifies a store's contents: its encoder, dataset, split, layout and the extraction code."""
    m = store.meta
    return DataVersion(short_hash(json_sha256({k: m.get(k) for k in (
        "encoder_sha256", "dataset_manifest_sha256", "split", "num_samples", "dtype", "encode_code_version")})))


def store_metadata(art: ExperimentArtifacts, store: LatentStore) -> dict:
    m = store.meta
    return {"latent_store_url": path_md(art.latent_store_url), "num_samples": int(m["num_samples"]),
            "latent_shape": MetadataValue.json(list(m["latent_shape"])), "dtype": m["dtype"], "split": m["split"],
            "complete": bool(m["complete"]), "encoder_sha256": m["encoder_sha256"],
            "stage1_complete": m.get("stage1_complete"),  # False: encoded by an unfinished checkpoint
            "dataset_manifest_sha256": m["dataset_manifest_sha256"],
            "channel_mean": MetadataValue.json(m.get("channel_mean")),
            "channel_std": MetadataValue.json(m.get("channel_std"))}


@asset(group_name="latents", partitions_def=EXPERIMENTS, deps=[dataset_shards, ul_autoencoder], kinds={"zarr"},
       code_version=stage_code_version("encode"), pool=GPU_POOL)
def latent_store(context: AssetExecutionContext, storage: StorageResource, compute: ComputeResource,
                 experiment_config: ExperimentConfigResource) -> MaterializeResult:
    """Zarr store of the Stage-1 encoder's z_clean for every training image (Stage 2's data)."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    if art.reused:
        try:
            store = open_store(art.latent_store_url, art.encoder_sha256, storage_options=art.storage_options)
        except LatentStoreError as e:
            raise art.missing("latent store", str(e), "latent_store") from None
        note = art.reuse_note("latent store", art.latent_store_url)
        context.log.info(f"{note}; nothing encoded")
        return MaterializeResult(metadata={**store_metadata(art, store), "reused_from": art.owner,
                                           "note": MetadataValue.text(note),
                                           "config": config_md(art.cfg)},
                                 data_version=store_data_version(store))
    t0 = time.perf_counter()
    launcher = launcher_for(compute, art.cfg)
    if launcher is not None:  # blocks split over torchrun ranks (local or on Slurm) through Pipes; rank 0 reports
        reported = launcher.run(context, "encode", art.cfg, art.stage1_dir,
                                     stage1_checkpoint=str(art.stage1_checkpoint), shards_url=art.shards_url,
                                     store_url=art.latent_store_url, storage_options=art.storage_options)
        store = open_store(art.latent_store_url, storage_options=art.storage_options)
    else:
        reported = {}
        store = encode_latents(art.stage1_checkpoint, art.shards_url, art.latent_store_url, cfg=art.cfg,
                               storage_options=art.storage_options, store_storage_options=art.storage_options,
                               progress=progress_log(context.log, "encoding"), warn=context.log.warning)
    return MaterializeResult(metadata={**store_metadata(art, store), "wall_seconds": time.perf_counter() - t0,
                                       "config": config_md(art.cfg), **reported},
                             data_version=store_data_version(store))


@multi_asset_check(specs=[
    AssetCheckSpec("complete", asset=latent_store, blocking=True, partitions_def=EXPERIMENTS,
                   description="The store is marked complete (every block and the channel statistics written)."),
    AssetCheckSpec("count_matches_shards", asset=latent_store, blocking=True, partitions_def=EXPERIMENTS,
                   description="It holds exactly as many latents as the dataset split has samples (manifest)."),
    AssetCheckSpec("z_clean_finite", asset=latent_store, blocking=True, partitions_def=EXPERIMENTS,
                   description="Every z_clean value is finite."),
])
def latent_store_checks(context: AssetCheckExecutionContext, storage: StorageResource, compute: ComputeResource,
                        experiment_config: ExperimentConfigResource):
    """Gates on the latent store before any base model trains on it."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    where = {"latent_store_url": path_md(art.latent_store_url)}
    try:
        store = open_store(art.latent_store_url, storage_options=art.storage_options, allow_incomplete=True)
    except LatentStoreError as e:
        for name in ("complete", "count_matches_shards", "z_clean_finite"):
            yield AssetCheckResult(check_name=name, passed=False, description=str(e), metadata=where)
        return
    meta = store.meta
    yield AssetCheckResult(check_name="complete", passed=bool(meta.get("complete")), metadata=where)

    expected = read_manifest(art.shards_url, art.storage_options).num_samples(meta["split"])
    have = int(store.z_clean.shape[0])
    yield AssetCheckResult(check_name="count_matches_shards", passed=have == int(meta["num_samples"]) == expected,
                           metadata={**where, "z_clean_rows": have, "meta_num_samples": int(meta["num_samples"]),
                                     f"manifest_{meta['split']}_samples": expected})

    non_finite, first_bad = 0, None
    for block in range(store.num_blocks):
        z, _ = store.read_block(block)
        bad = int(z.size - np.isfinite(z).sum())
        if bad and first_bad is None:
            first_bad = block
        non_finite += bad
    yield AssetCheckResult(check_name="z_clean_finite", passed=non_finite == 0,
                           metadata={**where, "non_finite_values": non_finite, "blocks": store.num_blocks},
                           description=None if non_finite == 0 else
                           f"{non_finite} non-finite z_clean values, first in block {first_bad}")
