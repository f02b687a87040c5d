"""Training-step throughput of every network in fp32 and bf16 autocast, against the device's matmul peak.

    python benchmarks/bench_compute.py [--device cpu|cuda] [--presets tiny,small] [--batch-size 64]
                                       [--networks base] [--warmup 2] [--steps 20] [--fast both|off|on]

For each preset (`tiny`, `small`; `paper` on CUDA only; any of SHAPES on request, e.g. `small_narrow_base`
for the latent study's quarter-FLOP base model) and each network (encoder, prior, decoder,
base model), the whole Stage-1 step (encoder + prior + decoder with the UL loss) and the whole
Stage-2 step (the base model's sigmoid-weighted diffusion loss, gradient clipping, AdamW and the EMA
update, with the demo's settings, as Stage 2 trains it), one training step is forward + backward +
AdamW on random data (the speed does not depend on the values). It prints samples/s, the achieved
GFLOP/s (3 x the forward FLOPs counted by ul_pipeline.nets, 2 per multiply-add) and that as a
percentage of a large matmul timed first in the same run, precision and thread count, as one Markdown table.
The header names the kernel and ISA of that matmul (torch's CPU capability, avx512_bf16 / AMX, oneDNN's
implementation line): a CPU without native bf16 converts bf16 to fp32 inside the kernel, so its bf16 peak is
below its fp32 peak; with avx512_bf16 it is about twice it; with AMX far higher. `--json FILE` writes the
same figures with the load average before and after the run.

`--fast both` (the default) gives every network with attention two rows, the reference path and the
opt-in fast path (compute.fast_transformer: ul_pipeline.nets.fast, fused AdamW); the two run in
alternating rounds of the same process, so a load that comes and goes on shared cores hits both, and
the fast row ends with its speed-up over the reference in each precision. Rates are the best of 5
rounds (earlier versions: the mean over all timed steps). The defaults take about
3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ul_pipeline.config import load_config  # noqa: E402
from ul_pipeline.evaluation.metrics import to_float  # noqa: E402
from ul_pipeline.nets.fast import set_fast_transformer  # noqa: E402
from ul_pipeline.nets.layers import Attention  # noqa: E402
from ul_pipeline.stage2.model import BaseModel  # noqa: E402
from ul_pipeline.train.ema import EMA  # noqa: E402
from ul_pipeline.nets.presets import build_base_model, build_stage1_nets  # noqa: E402
from ul_pipeline.plan.hardware import cpu_isa, matmul_gflops, onednn_kernel  # noqa: E402
from ul_pipeline.stage1 import UnifiedLatents  # noqa: E402
from ul_pipeline.train.flops import BACKWARD_FACTOR, forward_flops, stage1_calls, stage2_calls  # noqa: E402

# (image shape, classes, default batch) per preset: the demo's Fashion-MNIST shape, the paper's ImageNet-512
SHAPES = {"tiny": ((1, 32, 32), 10, 64), "small": ((1, 32, 32), 10, 64), "small_narrow_base": ((1, 32, 32), 10, 64),
          "paper": ((3, 512, 512), 1000, 8)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str, size: int) -> float:
    """GFLOP/s of a (size x size) @ (size x size) matmul in `precision` at this run's thread count: the
    ceiling the networks aim at, measured here (ul_pipeline.plan.hardware.matmul_gflops: the best of 3
    rounds of at least 0.5 s each), never taken from elsewhere."""
    return matmul_gflops(DTYPES[precision], size, device)


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages (other work on shared cores lowers every rate)."""
    return [round(x, 2) for x in os.getloadavg()]


def config_for(preset: str):
    """The demo config with every network of `preset` on that preset's image shape."""
    (channels, res, _), classes, _ = SHAPES[preset]
    return load_config("demo", [f"stage1.preset={preset}", f"stage2.preset={preset}", f"data.channels={channels}",
                                f"data.resolution={res}", f"data.num_classes={classes}"])


def workloads(preset: str, batch: int, device: torch.device):
    """(name, module, step_loss(module) -> scalar, forward FLOPs per example, the Stage-2 train config or None)
    for each network and the Stage-1 and Stage-2 steps."""
    cfg = config_for(preset)
    s1 = stage1_calls(cfg)
    latent_shape = tuple(s1["encoder"][0].latent_shape)
    s2 = stage2_calls(cfg, latent_shape)
    image_shape = (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    x = torch.rand(batch, *image_shape, device=device) * 2 - 1  # (B, C, H, W) in [-1, 1]
    z = torch.randn(batch, *latent_shape, device=device)  # (B, c, h, w)
    logsnr = torch.rand(batch, device=device) * 20 - 10
    labels = torch.randint(0, cfg.data.num_classes, (batch,), device=device)
    inputs = {"encoder": (x,), "prior": (z, logsnr), "decoder": (x, logsnr, z), "base": (z, logsnr, labels)}
    torch.manual_seed(0)
    with torch.device(device):  # real weights with the networks' own initialisation
        nets = dict(zip(("encoder", "prior", "decoder"), build_stage1_nets(preset, image_shape)))
        nets["base"] = build_base_model(preset, latent_shape, cfg.data.num_classes)
        ul = UnifiedLatents.from_config(cfg)
        base_model = BaseModel.from_config(cfg, latent_shape)
    out = [(name, nets[name], lambda m, a=inputs[name]: m(*a).float().square().mean(), forward_flops([call]), None)
           for name, call in [*s1.items(), *s2.items()]]
    images = (torch.rand(batch, *image_shape, device=device) * 255).to(torch.uint8)
    scale = 1.0 / (image_shape[0] * image_shape[1] * image_shape[2])
    out.append(("stage-1 step", ul, lambda m: m.loss_terms(to_float(images)).total_nats.mean() * scale,
                forward_flops(list(s1.values())), None))
    z_scale = 1.0 / z[0].numel()  # as ul_pipeline.stage2.training: nats per latent dimension
    out.append(("stage-2 step", base_model, lambda m: m.loss_terms(z, labels).weighted_nats.mean() * z_scale,
                forward_flops(list(s2.values())), cfg.stage2.train))
    return out


def make_step(module: torch.nn.Module, loss_fn, precision: str, device: torch.device, fast: bool, train_cfg=None):
    """One training step: forward (autocast in bf16) + backward + AdamW (fused on the fast path, as in
    ul_pipeline.train.loop); with a `train_cfg` also its gradient clipping, AdamW settings and EMA update."""
    set_fast_transformer(module, fast)
    tc = train_cfg
    hyper = dict(lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay) if tc is not None else dict(lr=1e-4)
    opt = torch.optim.AdamW(module.parameters(), **hyper, fused=True if fast else None)
    ema = EMA(module, tc.ema_decay) if tc is not None else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    module.train()
    count = [0]

    def step():
        with autocast:
            loss = loss_fn(module)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc is not None and tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), tc.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(module, count[0])
        count[0] += 1
    return step


def steps_per_s(steps_fns: dict, device: torch.device, warmup: int, steps: int, rounds: int = 5) -> dict[str, float]:
    """Training steps per second of each step function: the fastest of `rounds` alternating rounds (after
    `warmup`), so a load that comes and goes on shared cores counts as little as it can."""
    for fn in steps_fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(steps_fns, 0.0)
    n = max(1, steps // rounds)
    for _ in range(rounds):
        for name, fn in steps_fns.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync(device)
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--presets", default=None, help="comma-separated (default: tiny,small; plus paper on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step (default: 64; paper 8)")
    parser.add_argument("--networks", default=None,
                        help="comma-separated subset of encoder,prior,decoder,base,stage-1 step (default: all)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per measurement")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per measurement (5 rounds)")
    parser.add_argument("--fast", default="both", choices=("both", "off", "on"),
                        help="reference path (off), fast path (on; compute.fast_transformer) or both, "
                             "interleaved, for the networks with attention")
    parser.add_argument("--json", default=None, help="also write the peaks, ISA, load and rows to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    presets = args.presets.split(",") if args.presets else ["tiny", "small"] + (["paper"] * (device.type == "cuda"))
    if "paper" in presets and device.type != "cuda":
        sys.exit("the paper preset needs a GPU (--device cuda)")
    load_before = load_average()
    size = 8192 if device.type == "cuda" else 2048
    peak = {p: matmul_peak(device, p, size) for p in DTYPES}
    if device.type == "cuda":
        name, kernels = torch.cuda.get_device_name(device), {p: "cuBLAS" for p in DTYPES}
    else:
        isa = cpu_isa()
        name = (f"{isa['cpu']}, {torch.get_num_threads()} threads, torch ISA {isa['torch_cpu_capability']}, "
                f"avx512_bf16 {'yes' if isa['avx512_bf16'] else 'no'}, AMX {'yes' if isa['amx_bf16'] else 'no'}")
        kernels = {p: onednn_kernel(DTYPES[p]) for p in DTYPES}
    print(f"device: {name} | torch {torch.__version__} | matmul {size}x{size} measured in this run: "
          f"fp32 {peak['fp32']:.1f} GFLOP/s ({kernels['fp32']}), bf16 {peak['bf16']:.1f} GFLOP/s ({kernels['bf16']}) "
          f"| {args.warmup} warm-up + {args.steps} timed steps | load average before {load_before}\n", flush=True)
    print("| preset | network | path | batch | train GFLOPs/example | fp32 samples/s | fp32 GFLOP/s (% of peak) "
          "| bf16 samples/s | bf16 GFLOP/s (% of peak) | bf16 / fp32 | fast / reference: fp32, bf16 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for preset in presets:
        batch = args.batch_size or SHAPES[preset][2]
        for net_name, module, loss_fn, fwd_flops, train_cfg in workloads(preset, batch, device):
            if args.networks and net_name not in args.networks.split(","):
                continue
            train_flops = BACKWARD_FACTOR * fwd_flops  # per example
            has_attention = any(isinstance(m, Attention) for m in module.modules())
            paths = {"both": ("reference", "fast"), "off": ("reference",), "on": ("fast",)}[args.fast]
            paths = paths if has_attention else ("reference",)
            rates = {path: {} for path in paths}
            for precision in DTYPES:
                fns = {path: make_step(copy.deepcopy(module), loss_fn, precision, device, path == "fast", train_cfg)
                       for path in paths}
                for path, rate in steps_per_s(fns, device, args.warmup, args.steps).items():
                    rates[path][precision] = batch * rate
            for path, r in rates.items():
                cells = [c for p in DTYPES for c in (f"{r[p]:.0f}", f"{r[p] * train_flops / 1e9:.1f} "
                                                                    f"({100 * r[p] * train_flops / 1e9 / peak[p]:.0f}%)")]
                ratio = (f"{r['fp32'] / rates['reference']['fp32']:.2f}x, {r['bf16'] / rates['reference']['bf16']:.2f}x"
                         if path == "fast" and "reference" in rates else "")
                print(f"| {preset} | {net_name} | {path} | {batch} | {train_flops / 1e9:.3f} | {' | '.join(cells)} "
                      f"| {r['bf16'] / r['fp32']:.2f}x | {ratio} |", flush=True)
                rows.append({"preset": preset, "network": net_name, "path": path, "batch": batch,
                             "train_gflops_per_example": train_flops / 1e9,
                             **{f"{p}_samples_per_s": r[p] for p in DTYPES},
                             **{f"{p}_pct_of_peak": 100 * r[p] * train_flops / 1e9 / peak[p] for p in DTYPES}})
    load_after = load_average()
    print(f"\nload average after {load_after}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "matmul_size": size, "peak_gflops": peak, "peak_kernel": kernels,
            "load_average_before": load_before, "load_average_after": load_after,
            "warmup": args.warmup, "steps": args.steps, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
