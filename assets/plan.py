"""The run plan (ul_pipeline.plan) of a training asset, logged as an observation before training starts."""

from __future__ import annotations

from dagster import AssetExecutionContext, AssetObservation, MetadataValue

from resources import ComputeResource


def log_plan(context: AssetExecutionContext, cfg, stage: str, compute: ComputeResource, **plan_kwargs) -> dict:
    """When compute.plan_gpu names an accelerator: plan `stage` of `cfg` on nproc_per_node x nnodes of them,
    log the table, and record the figures as an AssetObservation now (before training) and return them
    for the materialization's metadata. Otherwise nothing ({})."""
    if not compute.plan_gpu:
        return {}
    from ul_pipeline.plan.report import format_plan, plan_experiment

    gpus = int(cfg.compute.nproc_per_node) * int(cfg.compute.nnodes)
    plan = plan_experiment(cfg, gpus=gpus, gpu=compute.plan_gpu, stages=(stage,), **plan_kwargs)
    text = format_plan(plan)
    context.log.info(text)
    meta = {**plan.stages[0].metadata(), "plan": MetadataValue.md(text)}
    partition = context.partition_key if context.has_partition_key else None
    context.log_event(AssetObservation(asset_key=context.asset_key, partition=partition, metadata=meta))
    return meta
