"""The `plan` command's arguments and body (the CLI stays a thin front; torch loads only when it runs)."""

from __future__ import annotations

import json


def register(command, config) -> None:
    """Add `plan` through the CLI's `command(name, fn, help)`; `config(args)` loads the experiment."""
    c = command("plan", lambda args: print(run(config(args), args)), "per stage: parameters, FLOPs, memory per "
                "device (traced), fit, largest batch, time to the configured samples")
    c.add_argument("--gpus", type=int, default=1, help="devices the global batch is split over")
    c.add_argument("--gpu", default="h100", help="h100 | h200 | a100 | l40s | cpu (this CPU, measured)")
    c.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed for the time")
    c.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(cfg, args) -> str:
    from ul_pipeline.plan.report import format_plan, plan_dict, plan_experiment

    plan = plan_experiment(cfg, gpus=args.gpus, gpu=args.gpu, mfu=args.mfu)
    return json.dumps(plan_dict(plan), indent=2) if args.json else format_plan(plan)
