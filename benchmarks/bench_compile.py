"""compute.compile measured: cold compile time, steady-state speed-up and agreement with eager, per network and stage.

    nice -n 5 python benchmarks/bench_compile.py [--presets small] [--networks all] [--precision auto]
        [--fast both] [--batch-size 64] [--steps 10] [--json benchmarks/results/bench_compile.json]

For each workload of benchmarks/bench_compute.py (the encoder, prior, decoder and base model alone, and the
whole Stage-1 and Stage-2 training steps; `--networks` picks some, default: the two stage steps) and each
path (reference and compute.fast_transformer), it builds one eager and one compiled copy from the same
weights, as the training loop compiles them (torch.compile of the loss computation, backward and AdamW
eager), and measures:

- agreement: the loss and every gradient of one step from the same weights and the same random draws
  (inductor's `fallback_random`, so compiled code draws eager's numbers), as the largest |difference|
  over the largest |value| of each gradient (bf16 rounding is 2^-8 = 0.4% of a value);
- cold compile: the first compiled step's wall time minus an eager step's, with an empty inductor cache
  (a fresh TORCHINDUCTOR_CACHE_DIR per workload and torch._dynamo.reset()), so nothing is reused;
- steady state: samples/s of each, the best of 5 alternating rounds after warm-up (as bench_compute.py).

Precision `auto` is what the training loop would use on this device (bf16 where the CPU has native bf16,
else fp32). The load average before and after goes into the JSON: compile time and speed-ups on shared
cores depend on it. One command, rerunnable; the defaults take about 10 minutes on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_compute import SHAPES, load_average, steps_per_s, sync, workloads  # noqa: E402
from ul_pipeline.nets.fast import set_fast_transformer  # noqa: E402
from ul_pipeline.nets.layers import Attention  # noqa: E402
from ul_pipeline.plan.hardware import cpu_isa  # noqa: E402
from ul_pipeline.train.loop import resolve_precision  # noqa: E402


class _Loss(torch.nn.Module):
    """module + loss as one module, compiled as the training loop compiles its _LossModule."""

    def __init__(self, module, loss_fn):
        super().__init__()
        self.module, self.loss_fn = module, loss_fn

    def forward(self):
        return self.loss_fn(self.module)


def make_step(module, loss_fn, precision: str, device: torch.device, fast: bool, compiled: bool):
    """(loss module, one training step: forward under autocast, backward, AdamW) on its own copy."""
    module = set_fast_transformer(copy.deepcopy(module), fast)
    module.train()
    wrapper = _Loss(module, loss_fn)
    run = torch.compile(wrapper) if compiled else wrapper
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True if fast else None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step():
        with autocast:
            loss = run()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return module, run, autocast, step


def agreement(eager, compiled) -> dict:
    """Loss and gradients of one step of two copies with the same weights and the same random draws."""
    out = {}
    grads = []
    for module, run, autocast, _ in (eager, compiled):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(1234)
        with autocast:
            loss = run()
        loss.backward()
        grads.append((float(loss), {n: p.grad.detach().clone() for n, p in module.named_parameters()
                                    if p.grad is not None}))
    (loss_e, g_e), (loss_c, g_c) = grads
    rel = [float((g_c[n] - g).abs().max() / g.abs().max().clamp_min(1e-30)) for n, g in g_e.items()]
    out.update(loss_eager=loss_e, loss_compiled=loss_c, loss_rel_diff=abs(loss_c - loss_e) / max(abs(loss_e), 1e-30),
               grad_max_rel_diff=max(rel), grad_median_rel_diff=sorted(rel)[len(rel) // 2],
               grads_compared=len(rel))
    for module, *_ in (eager, compiled):
        module.zero_grad(set_to_none=True)
    return out


def measure(name, module, loss_fn, batch, precision, device, fast, args) -> dict:
    torch._dynamo.reset()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ul_bench_compile_")  # cold: nothing cached
    eager = make_step(module, loss_fn, precision, device, fast, compiled=False)
    compiled = make_step(module, loss_fn, precision, device, fast, compiled=True)
    eager[3]()  # warm eager (allocations, kernels) before timing its step
    sync(device)
    t0 = time.perf_counter()
    eager[3]()
    sync(device)
    eager_step = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled[3]()  # compiles the forward, then the backward graph
    sync(device)
    compile_s = time.perf_counter() - t0 - eager_step
    compiled[0].load_state_dict(eager[0].state_dict())  # same weights for the agreement check
    check = agreement(eager, compiled)
    rates = steps_per_s({"eager": eager[3], "compiled": compiled[3]}, device, args.warmup, args.steps)
    return {"workload": name, "path": "fast" if fast else "reference", "batch": batch, "precision": precision,
            "cold_compile_s": compile_s, "eager_samples_per_s": batch * rates["eager"],
            "compiled_samples_per_s": batch * rates["compiled"], "speedup": rates["compiled"] / rates["eager"],
            **check}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", default="small")
    parser.add_argument("--networks", default="stage-1 step,stage-2 step",
                        help="comma-separated subset of encoder,prior,decoder,base,stage-1 step,stage-2 step, or all")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--fast", default="both", choices=("both", "off", "on"))
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per path (5 alternating rounds)")
    parser.add_argument("--json", default="benchmarks/results/bench_compile.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch._inductor.config.fallback_random = True  # compiled random draws = eager's (agreement check)
    precision = resolve_precision(args.precision, device)
    load_before, t_start = load_average(), time.perf_counter()
    print(f"device {device} | precision {precision} | threads {torch.get_num_threads()} | torch {torch.__version__} "
          f"| load average before {load_before}", flush=True)
    print("| preset | workload | path | batch | cold compile (s) | eager samples/s | compiled samples/s | speed-up "
          "| loss rel. diff | grad max rel. diff (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets.split(","):
        batch = args.batch_size or SHAPES[preset][2]
        for name, module, loss_fn, _, _ in workloads(preset, batch, device):
            if args.networks != "all" and name not in args.networks.split(","):
                continue
            has_attention = any(isinstance(m, Attention) for m in module.modules())
            fasts = {"both": (False, True), "off": (False,), "on": (True,)}[args.fast] if has_attention else (False,)
            for fast in fasts:
                r = {"preset": preset, **measure(name, module, loss_fn, batch, precision, device, fast, args)}
                rows.append(r)
                print(f"| {preset} | {name} | {r['path']} | {batch} | {r['cold_compile_s']:.1f} "
                      f"| {r['eager_samples_per_s']:.0f} | {r['compiled_samples_per_s']:.0f} | {r['speedup']:.2f}x "
                      f"| {r['loss_rel_diff']:.1e} | {r['grad_max_rel_diff']:.1e} ({r['grad_median_rel_diff']:.1e}) |",
                      flush=True)
    load_after = load_average()
    print(f"\nload average after {load_after}; {time.perf_counter() - t_start:.0f} s in all")
    info = cpu_isa() if device.type == "cpu" else {"gpu": torch.cuda.get_device_name(device)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "device": info, "torch": torch.__version__, "precision": precision, "threads": torch.get_num_threads(),
        "load_average_before": load_before, "load_average_after": load_after,
        "wall_s": time.perf_counter() - t_start, "steps": args.steps, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
