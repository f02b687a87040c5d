"""Where a ViT training step spends its CPU time: per-op self times, reference path against the fast path.

    python benchmarks/profile_nets.py [--networks prior,base] [--precisions fp32,bf16] [--batch-size 64]
                                      [--rows 12] [--rounds 5]

For each network of the `small` preset on the demo's Fashion-MNIST shape (latents (4, 8, 8)) and each
precision, one training step is forward (autocast in bf16) + backward + AdamW, as in bench_compute.py.
Two copies of the network with the same weights run the reference path and the fast path
(compute.fast_transformer: ul_pipeline.nets.fast) in alternating short rounds, so a load that comes and
goes on shared cores hits both alike; the ratio of their best rounds is printed, then torch.profiler's
top ops by self CPU time of each path.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from ul_pipeline.nets.fast import fast_optimizer_kwargs, set_fast_transformer  # noqa: E402
from ul_pipeline.nets.presets import build_base_model, build_stage1_nets  # noqa: E402


def networks(batch: int):
    """{name: (network, inputs)} for the small prior and base model on (4, 8, 8) latents."""
    torch.manual_seed(0)
    _, prior, _ = build_stage1_nets("small", (1, 32, 32))
    base = build_base_model("small", (4, 8, 8), 10)
    z, logsnr = torch.randn(batch, 4, 8, 8), torch.rand(batch) * 20 - 10  # (B, c, h, w), (B,)
    labels = torch.randint(0, 10, (batch,))
    return {"prior": (prior, (z, logsnr)), "base": (base, (z, logsnr, labels))}


def make_step(net: torch.nn.Module, inputs: tuple, precision: str, fast: bool):
    """A closure running one training step of `net` (fast path or reference)."""
    set_fast_transformer(net, fast)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, **(fast_optimizer_kwargs() if fast else {}))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    net.train()

    def step():
        with autocast:
            loss = net(*inputs).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def best_rates(steps: dict, batch: int, rounds: int, per_round: int = 5) -> dict[str, float]:
    """Samples/s of each step function: the best of `rounds` alternating rounds."""
    best = dict.fromkeys(steps, 0.0)
    for fn in steps.values():
        for _ in range(3):
            fn()  # warm-up
    for _ in range(rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            best[name] = max(best[name], per_round * batch / (time.perf_counter() - t0))
    return best


def top_ops(fn, rows: int, steps: int = 5) -> str:
    """torch.profiler's table of the `rows` ops with the most self CPU time over `steps` steps."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="prior,base")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    for name, (net, inputs) in networks(args.batch_size).items():
        if name not in args.networks.split(","):
            continue
        for precision in args.precisions.split(","):
            steps = {path: make_step(copy.deepcopy(net), inputs, precision, path == "fast")
                     for path in ("reference", "fast")}
            rates = best_rates(steps, args.batch_size, args.rounds)
            print(f"\n## {name} {precision}: reference {rates['reference']:.0f} samples/s, fast "
                  f"{rates['fast']:.0f} samples/s, fast / reference {rates['fast'] / rates['reference']:.2f}x")
            for path, fn in steps.items():
                print(f"\n{name} {precision} {path}, 5 steps:\n{top_ops(fn, args.rows)}", flush=True)


if __name__ == "__main__":
    main()
