"""study: a sweep's points side by side (bits/pixel against PSNR, rFID and gFID), from the metrics history."""

from typing import Any, Mapping

import polars as pl
from dagster import (AssetDep, AssetExecutionContext, AssetsDefinition, Failure, MaterializeResult, MetadataValue,
                     StaticPartitionMapping, StaticPartitionsDefinition, asset)

from assets.evaluation import evaluation
from assets.metadata import image_md, path_md
from assets.partitions import SWEEP_OF_POINT, SWEEPS
from assets.artifacts import resolve
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.train.checkpoint import file_sha256
from ul_pipeline.config import CONFIG_DIR
from ul_pipeline.evaluation.study import StudyError, summary_columns, write_study
from ul_pipeline.config.sweeps import load_sweep


def table_md(table: pl.DataFrame) -> MetadataValue:
    """The study's main columns as a Markdown table, one row per point."""
    columns = summary_columns(table)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.select(columns).iter_rows():
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return MetadataValue.md("\n".join(lines))


def current_checkpoints(sweep, storage, experiment_config, compute) -> dict[str, dict[str, str | None]]:
    """Each point's current Stage-1 and base-model sha256 (None where a checkpoint is missing)."""
    def sha(path_of) -> str | None:
        try:
            path = path_of()
        except Exception:  # an upstream artifact is missing: no evaluation can be current
            return None
        return file_sha256(path) if path.exists() else None

    out = {}
    for p in sweep.points:
        art = resolve(p.key, storage, experiment_config, compute)
        out[p.key] = {"stage1_sha256": sha(lambda: art.stage1_checkpoint), "base_sha256": sha(lambda: art.base_checkpoint)}
    return out


def build_study_asset(sweeps: StaticPartitionsDefinition, sweep_of_point: Mapping[str, str]) -> AssetsDefinition:
    """The `study` asset over `sweeps`, reading `evaluation` of each point (`sweep_of_point`: point -> sweep)."""

    @asset(name="study", group_name="study", partitions_def=sweeps, kinds={"polars"},
           deps=[AssetDep(evaluation, partition_mapping=StaticPartitionMapping(dict(sweep_of_point)))])
    def study(context: AssetExecutionContext, storage: StorageResource,
              experiment_config: ExperimentConfigResource, compute: ComputeResource) -> MaterializeResult:
        """A sweep's points side by side: bits/pixel against PSNR, rFID and gFID, as a table and a picture."""
        sweep = load_sweep(context.partition_key, experiment_config.config_dir or CONFIG_DIR)
        try:
            result = write_study(sweep, storage.history_url(), storage.run_dir(sweep.name, "study"),
                                 storage.storage_options(), current=current_checkpoints(sweep, storage,
                                                                                        experiment_config, compute))
        except StudyError as e:
            raise Failure(description=f"{e}. Materialize evaluation for those partitions first, or run "
                                      f"`python -m ul_pipeline_dagster sweep_runner {sweep.name}` (it skips finished points).",
                          metadata={"metrics_history": path_md(storage.history_url())}) from None
        context.log.info(f"study of {sweep.name}: {result.table.height} points -> {result.parquet}")
        return MaterializeResult(metadata={
            "points": result.table.height, "study": table_md(result.table),
            "study_image": image_md(result.png, f"{sweep.name}: bits/pixel against PSNR, rFID, gFID"),
            "study_parquet": path_md(result.parquet), "study_png": path_md(result.png),
            "metrics_history": path_md(storage.history_url()), "sweep_file": path_md(sweep.origin)})

    return study


study = build_study_asset(SWEEPS, SWEEP_OF_POINT)


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
