"""The run plan as Dagster metadata: observed before the stage trains, kept on its materialization, opt-in."""

import dagster as dg

from assets.plan import log_plan
from resources import ComputeResource
from ul_pipeline.config import load_config
from ul_pipeline.plan.memory import StepMemory


def stub_trace(build, loss, batch, precision, grad_clip):  # the planner's own tests check the real trace
    return StepMemory(batch=batch, parameters=10, weights=40, optimizer=80, ema=40, activations=100 * batch,
                      step_peak=100 * batch)


def materialize(compute: ComputeResource) -> tuple[dg.ExecuteInProcessResult, list]:
    cfg = load_config("smoke", ["compute.nproc_per_node=2"])
    order = []

    @dg.asset
    def stage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        meta = log_plan(context, cfg, "stage2", compute, trace=stub_trace)
        order.append("trained")  # training would start here
        return dg.MaterializeResult(metadata=meta)

    return dg.materialize([stage]), order


def test_the_plan_is_observed_before_training_and_kept_on_the_materialization():
    result, order = materialize(ComputeResource(plan_gpu="a100"))
    kinds = [e.event_type_value for e in result.all_events if e.event_type_value in
             ("ASSET_OBSERVATION", "ASSET_MATERIALIZATION")]
    assert kinds == ["ASSET_OBSERVATION", "ASSET_MATERIALIZATION"] and order == ["trained"]
    observed = next(e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION")
    meta = observed.event_specific_data.asset_observation.metadata
    assert meta["plan_batch_per_device"].value == 16  # smoke's global batch 32 over nproc_per_node=2
    assert meta["plan_fits"].value is True and meta["plan_hours"].value > 0
    materialized = result.asset_materializations_for_node("stage")[0].metadata
    assert materialized["plan_train_gflops_per_sample"] == meta["plan_train_gflops_per_sample"]


def test_no_plan_unless_compute_plan_gpu_is_set():
    result, _ = materialize(ComputeResource())
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert "plan_hours" not in result.asset_materializations_for_node("stage")[0].metadata
