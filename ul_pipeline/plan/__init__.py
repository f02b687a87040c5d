"""What an experiment will cost before it runs (the `plan` command): FLOPs, memory per device, fit and time."""

from ul_pipeline.plan.hardware import GPUS, Accelerator
from ul_pipeline.plan.memory import StepMemory, trace_step
from ul_pipeline.plan.report import MFU, USABLE_FRACTION, Plan, StagePlan, format_plan, plan_dict, plan_experiment

__all__ = ["GPUS", "MFU", "USABLE_FRACTION", "Accelerator", "Plan", "StagePlan", "StepMemory", "format_plan",
           "plan_dict", "plan_experiment", "trace_step"]
