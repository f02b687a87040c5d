"""evaluation: bits/pixel, PSNR, rFID, gFID/KID and the picture grids, with warnings outside expected ranges.

Run config (`EvaluationConfig`): `prompts`, for text-to-image experiments, sampled into the prompt grid, e.g.
`ops: {evaluation: {config: {prompts: ["thumbs up sign", "red apple"]}}}`.
"""

import json
import math

from dagster import (AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec,
                     AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset, multi_asset_check)

from assets.artifacts import resolve
from assets.data import dataset_shards
from assets.metadata import config_md, floats, gif_md, image_md, metrics_table_md, path_md
from assets.partitions import EXPERIMENTS
from assets.stage1 import ul_autoencoder
from assets.stage2 import base_model
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.evaluation.image import evaluate

EVAL_METRICS = ("bits_per_pixel", "bits_per_image", "bits_per_latent_dim", "latent_nats", "psnr", "rfid", "gfid",
                "kid", "kid_std", "frame_fid", "frame_rfid", "fvd", "rfvd", "eval_seconds", "stage1_train_seconds", "encode_seconds", "stage2_train_seconds",
                *(f"seconds_{part}" for part in ("load", "bits", "reconstruct", "sample", "features_real",
                                                 "features_recon", "features_gen", "fid", "fvd")))
VIDEO_GIFS = ("reconstruction_gif", "sample_gif")  # video experiments: clips playing, beside the frame strips
GRIDS = ("reconstruction_grid", "sample_grid", "prompts_grid")  # prompts_grid: text models only


class EvaluationConfig(Config):
    prompts: list[str] = []  # text-to-image models: prompts sampled into prompts_grid.png beside the held-out ones


@asset(group_name="evaluation", partitions_def=EXPERIMENTS, deps=[base_model, ul_autoencoder, dataset_shards],
       kinds={"pytorch"})
def evaluation(context: AssetExecutionContext, config: EvaluationConfig, storage: StorageResource,
               compute: ComputeResource, experiment_config: ExperimentConfigResource) -> MaterializeResult:
    """Held-out bits/pixel, PSNR and rFID of reconstructions, gFID/KID of samples, and their grids."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    result = evaluate(art.stage1_checkpoint, art.shards_url, art.evaluation_dir, base_checkpoint=art.base_checkpoint,
                      cfg=art.cfg, storage_options=art.storage_options, history_url=storage.history_url(),
                      log=context.log.info, warn=context.log.warning, prompts=config.prompts)
    grids = {f"{k}_image": image_md(result[k], k.replace("_", " ")) for k in GRIDS if k in result}
    grids.update({k: gif_md(result[k], k.replace("_", " ")) for k in VIDEO_GIFS if k in result})
    if "fvd_protocol" in result:
        grids["fvd_protocol"] = MetadataValue.json(result["fvd_protocol"])
    return MaterializeResult(metadata={
        **floats(result, EVAL_METRICS), "num_samples": int(result["num_samples"]),
        **{k: bool(result[k]) for k in ("stage1_complete", "base_complete") if k in result},  # False: unfinished
        "steps": int(result["steps"]), "decoder_steps": int(result["decoder_steps"]),
        "guidance": float(result["guidance"]), "metrics": metrics_table_md(result), **grids,
        **{k: path_md(result[k]) for k in GRIDS if k in result},
        **({"prompts": MetadataValue.json(result["prompts"])} if "prompts" in result else {}),
        "metrics_json": path_md(art.evaluation_dir / "metrics.json"), "metrics_history": path_md(storage.history_url()),
        "config": config_md(art.cfg)})


@multi_asset_check(specs=[
    AssetCheckSpec("psnr_above_floor", asset=evaluation, partitions_def=EXPERIMENTS,
                   description="Reconstruction PSNR is at least eval.psnr_floor (warning)."),
    AssetCheckSpec("bits_per_pixel_in_band", asset=evaluation, partitions_def=EXPERIMENTS,
                   description="Held-out bits/pixel lies inside eval.bits_per_pixel_band (warning)."),
])
def evaluation_checks(context: AssetCheckExecutionContext, storage: StorageResource, compute: ComputeResource,
                      experiment_config: ExperimentConfigResource):
    """Warnings when the evaluation's numbers fall outside the experiment's expected ranges."""
    art = resolve(context.partition_key, storage, experiment_config, compute)
    metrics_path = art.evaluation_dir / "metrics.json"
    result = json.loads(metrics_path.read_text())
    psnr, floor = float(result["psnr"]), float(art.cfg.eval.psnr_floor)
    yield AssetCheckResult(check_name="psnr_above_floor", passed=psnr >= floor, severity=AssetCheckSeverity.WARN,
                           metadata={"psnr": psnr, "psnr_floor": floor, "metrics_json": path_md(metrics_path)},
                           description=None if psnr >= floor else
                           f"PSNR {psnr:.2f} dB is under eval.psnr_floor {floor}")
    bpp = float(result["bits_per_pixel"])
    lo, hi = (float(v) for v in art.cfg.eval.bits_per_pixel_band)
    inside = math.isfinite(bpp) and lo <= bpp <= hi
    yield AssetCheckResult(check_name="bits_per_pixel_in_band", passed=inside, severity=AssetCheckSeverity.WARN,
                           metadata={"bits_per_pixel": bpp, "band": MetadataValue.json([lo, hi]),
                                     "metrics_json": path_md(metrics_path)},
                           description=None if inside else f"bits/pixel {bpp:.4f} outside eval.bits_per_pixel_band "
                                                           f"[{lo}, {hi}]")
