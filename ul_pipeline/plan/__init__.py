"""What an experiment will cost before it runs (the `plan` command): FLOPs, memory per device, fit and time.

ul_pipeline.plan.report (plan_experiment, format_plan), .memory (trace_step), .hardware (GPUS, measured peaks);
.command holds the CLI's arguments and imports no torch until it runs.
"""
