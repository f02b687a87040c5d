"""dataset_shards: the experiment's images as train/val WebDataset shards with a manifest."""

import time

from dagster import AssetExecutionContext, Config, DataVersion, Failure, MaterializeResult, MetadataValue, asset

from assets.artifacts import ExperimentArtifacts, resolve
from assets.metadata import config_md, path_md
from assets.partitions import EXPERIMENTS
from assets.progress import progress_log
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.config.sweeps import data_sha256
from ul_pipeline.data import ShardManifest, read_manifest
from ul_pipeline.data.storage import creation_lock
from ul_pipeline.lifecycle import make_shards
from ul_pipeline.versioning import stage_code_version


class ShardsConfig(Config):
    overwrite: bool = False  # rewrite the shards even if their manifest matches (files at data.uri changed) or
    # disagrees with the config; the old set stays readable until the new manifest replaces it


def manifest_mismatch(art: ExperimentArtifacts, manifest: ShardManifest) -> list[str]:
    """How existing shards differ from what the experiment's data config would write.

    The data section's hash (source, uri, frames, fps, limit, ...) decides; a manifest written before
    it was recorded sits in a folder named by that hash (`shards-{data_hash}`), and the columns it has
    are compared too."""
    d, row = art.cfg.data, manifest.table.row(0, named=True)
    want = {"resolution": d.resolution, "channels": d.channels, "num_classes": d.num_classes, "seed": d.seed,
            "val_size": d.val_size, "shard_size": d.shard_size, "frames": d.frames}
    diffs = [f"data.{k}: shards have {row[k]}, config has {v}" for k, v in want.items() if row.get(k, v) != v]
    total = manifest.num_samples("train") + manifest.num_samples("val")
    if d.limit is not None and total != d.limit:
        diffs.append(f"data.limit: shards hold {total} samples, config has {d.limit}")
    have, ours = manifest.data_sha256, data_sha256(art.cfg)
    if have is not None and have != ours:
        diffs.append(f"data section: the shards' hashes to {have[:12]}, the config's to {ours[:12]} (manifest "
                     f"column data_sha256; some data.* key such as source, uri, frames, fps or limit differs)")
    return diffs


def shards_metadata(art: ExperimentArtifacts, manifest: ShardManifest) -> dict:
    return {"shards_url": path_md(art.shards_url), "manifest_sha256": manifest.sha256,
            "train_samples": manifest.num_samples("train"), "val_samples": manifest.num_samples("val"),
            "shards": manifest.table.height, "bytes": int(manifest.table["bytes"].sum()),
            "resolution": manifest.resolution, "channels": manifest.channels, "num_classes": manifest.num_classes}


def reused_shards(art) -> MaterializeResult:
    """The owner's shard set (latent_store_of): kept as it is, or a clear failure when it is absent."""
    try:
        existing = read_manifest(art.shards_url, art.storage_options)
    except FileNotFoundError:
        raise art.missing("dataset shards", f"{art.shards_url} has no manifest", "dataset_shards") from None
    note = art.reuse_note("dataset shards", art.shards_url)
    return MaterializeResult(metadata={**shards_metadata(art, existing), "reused_from": art.owner,
                                       "note": MetadataValue.text(note), "config": config_md(art.cfg)},
                             data_version=DataVersion(existing.sha256))


@asset(group_name="data", partitions_def=EXPERIMENTS, kinds={"webdataset"}, code_version=stage_code_version("shards"))
def dataset_shards(context: AssetExecutionContext, config: ShardsConfig, storage: StorageResource,
                   compute: ComputeResource, experiment_config: ExperimentConfigResource) -> MaterializeResult:
    """Train/val WebDataset shards of the experiment's images, with a Parquet manifest."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    t0 = time.perf_counter()
    if art.reused:
        context.log.info(art.reuse_note("dataset shards", art.shards_url))
        return reused_shards(art)
    # a sweep's points share one shard set: concurrent runs (a backfill) wait here for the first
    # to write it and then keep it, so it is written once and nobody reads it half-written
    with creation_lock(art.shards_url, f"shard set {art.shards_url}", art.storage_options, log=context.log.info):
        try:
            existing = read_manifest(art.shards_url, art.storage_options)
        except FileNotFoundError:
            existing = None
        if existing is not None and not config.overwrite:
            diffs = manifest_mismatch(art, existing)
            if diffs:
                raise Failure(description=f"shards at {art.shards_url} were written with another data config:\n  "
                                          + "\n  ".join(diffs) + "\nRun with config overwrite: true to rewrite them.")
            context.log.info(f"shards at {art.shards_url} match the config's data section; kept "
                             f"(manifest sha256 {existing.sha256})")
            manifest, status = existing, "kept"
        else:
            manifest = make_shards(art.cfg, art.shards_url, storage_options=art.storage_options,
                                   overwrite=config.overwrite, progress=progress_log(context.log, "sharding"))
            status = "written"
    return MaterializeResult(metadata={**shards_metadata(art, manifest), "status": status,
                                       "wall_seconds": time.perf_counter() - t0, "config": config_md(art.cfg)},
                             data_version=DataVersion(manifest.sha256))
