"""What an experiment costs before it runs: per stage, size, FLOPs, memory per device, fit, and time.

FLOPs per sample are the ones the training loop logs (ul_pipeline.train.flops: counted on the meta
device, training = 3 x forward). Memory per device is traced (ul_pipeline.plan.memory) at the batch
each device gets (train.batch_size / gpus, rounded up; an uneven split is noted, as training refuses it)
and at half of it (at 2 when it is 1); the largest batch that fits is
where the line through those two points meets the usable memory (activations grow linearly with the
batch). Time = total_samples x training FLOPs / (gpus x peak x MFU).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ul_pipeline import config as config_lib
from ul_pipeline.plan.hardware import GPUS, Accelerator, cpu_model, matmul_gflops
from ul_pipeline.plan.memory import StepMemory, trace_step

MFU = 0.40  # default model FLOPs utilisation: achieved training FLOP/s over the dense bf16 peak
USABLE_FRACTION = 0.90  # of device memory a step may use: the CUDA context (~0.5 GB), cuBLAS/cuDNN
# workspaces, NCCL buffers and allocator fragmentation take the rest
GIB = 2**30


@dataclass(frozen=True)
class StagePlan:
    stage: str  # "stage1" | "stage2"
    preset: str
    parameters: int
    forward_flops: float  # per sample
    train_flops: float  # per sample (what the training loop's gflops_per_s divides by)
    batch_per_device: int
    memory: StepMemory  # traced at batch_per_device
    ddp_bytes: int  # DDP's gradient buckets (a second copy of the fp32 gradients) when gpus > 1
    peak_bytes: int  # weights + optimizer + EMA + step peak + DDP buckets, per device
    usable_bytes: int
    fits: bool
    max_batch_per_device: int  # largest batch that fits (0: not even one example)
    total_samples: int
    hours: float  # to total_samples at `mfu` of the devices' bf16 peak
    note: str = ""

    def metadata(self) -> dict:
        """Plain numbers for Dagster asset metadata and JSON."""
        m = self.memory
        return {"plan_parameters_m": self.parameters / 1e6, "plan_forward_gflops_per_sample": self.forward_flops / 1e9,
                "plan_train_gflops_per_sample": self.train_flops / 1e9, "plan_batch_per_device": self.batch_per_device,
                "plan_weights_optimizer_ema_gib": m.static / GIB, "plan_activations_gib": m.activations / GIB,
                "plan_step_peak_gib": m.step_peak / GIB, "plan_peak_per_device_gib": self.peak_bytes / GIB,
                "plan_usable_per_device_gib": self.usable_bytes / GIB, "plan_fits": self.fits,
                "plan_max_batch_per_device": self.max_batch_per_device, "plan_hours": self.hours}


@dataclass(frozen=True)
class Plan:
    experiment: str
    device: str  # accelerator, in words
    gpus: int
    peak_tflops: float  # per device, bf16 dense (or measured on a CPU)
    mfu: float
    precision: str
    stages: tuple[StagePlan, ...]


def accelerator(gpu: str) -> Accelerator:
    """A known GPU, or this CPU measured (bf16 large-matmul rate where bf16 is native, else fp32; its RAM)."""
    if gpu in GPUS:
        return GPUS[gpu]
    if gpu != "cpu":
        raise ValueError(f"--gpu {gpu!r}: known accelerators are {sorted(GPUS)} and cpu")
    from ul_pipeline.train.loop import resolve_precision

    dtype = torch.bfloat16 if resolve_precision("auto", torch.device("cpu")) == "bf16" else torch.float32
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    name = f"CPU {cpu_model()} ({torch.get_num_threads()} threads, measured {str(dtype)[6:]} matmul peak)"
    return Accelerator(name, matmul_gflops(dtype, 1024, min_seconds=0.3) / 1e3, ram / 1e9)


def _stage_workloads(cfg: DictConfig) -> dict[str, tuple]:
    """stage -> (build, loss(model, batch), train FLOPs, forward FLOPs, preset, train config, note)."""
    from ul_pipeline.stage1.model import UnifiedLatents
    from ul_pipeline.stage2.model import BaseModel
    from ul_pipeline.train.flops import BACKWARD_FACTOR, stage1_calls, stage1_train_flops, stage2_train_flops

    image_shape = tuple(config_lib.sample_shape(cfg.data))
    latent_shape = tuple(stage1_calls(cfg)["encoder"][0].latent_shape)
    s1_flops, s2_flops = stage1_train_flops(cfg), stage2_train_flops(cfg, latent_shape)

    def stage1_loss(m: nn.Module, b: int) -> Tensor:  # as ul_pipeline.stage1.training (images in [-1, 1])
        return m.loss_terms(torch.rand(b, *image_shape) * 2 - 1).total_nats.mean() / math.prod(image_shape)

    def stage2_loss(m: nn.Module, b: int) -> Tensor:  # as ul_pipeline.stage2.training
        z, labels = torch.randn(b, *latent_shape), torch.zeros(b, dtype=torch.long)
        return m.loss_terms(z, labels).weighted_nats.mean() / math.prod(latent_shape)

    plain = cfg.stage2.get("text_conditioning", "none") == "none" and not cfg.stage2.get("context_frames", 0)
    note = "" if plain else "memory traced for the class-conditional base model of the same preset"
    return {"stage1": (lambda: UnifiedLatents.from_config(cfg), stage1_loss, s1_flops, s1_flops / BACKWARD_FACTOR,
                       cfg.stage1.preset, cfg.stage1.train, ""),
            "stage2": (lambda: BaseModel.from_config(cfg, latent_shape), stage2_loss, s2_flops,
                       s2_flops / BACKWARD_FACTOR, cfg.stage2.preset, cfg.stage2.train, note)}


def plan_experiment(cfg: DictConfig, gpus: int = 1, gpu: str = "h100", mfu: float = MFU,
                    stages: tuple[str, ...] = ("stage1", "stage2"),
                    trace: Callable[..., StepMemory] = trace_step) -> Plan:
    """The plan of experiment `cfg` on `gpus` devices of kind `gpu` (a key of GPUS, or "cpu")."""
    if gpus < 1:
        raise ValueError(f"--gpus must be at least 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}")
    acc = accelerator(gpu)
    precision = cfg.compute.precision
    if precision == "auto":
        from ul_pipeline.train.loop import resolve_precision

        precision = resolve_precision("auto", torch.device("cuda" if gpu != "cpu" else "cpu"))
    usable = int(acc.memory_gb * 1e9 * USABLE_FRACTION)
    out = []
    for stage, (build, loss, train_flops, fwd_flops, preset, tc, note) in _stage_workloads(cfg).items():
        if stage not in stages:
            continue
        batch = -(-int(tc.batch_size) // gpus)
        mem = trace(build, loss, batch, precision, float(tc.grad_clip))
        other = trace(build, loss, batch // 2 if batch > 1 else 2, precision, float(tc.grad_clip))  # batch 1: at 2
        ddp = 4 * mem.parameters if gpus > 1 else 0
        per_example = (mem.step_peak - other.step_peak) / (batch - other.batch)
        fixed = mem.step_peak - per_example * batch
        if int(tc.batch_size) % gpus:  # ul_pipeline.distributed.share refuses an uneven split
            note = "; ".join(filter(None, [f"train.batch_size {int(tc.batch_size)} is not divisible by {gpus} GPUs: "
                                           f"training refuses it (choose a multiple of {gpus}); planned at "
                                           f"{batch} per device", note]))
        room = usable - mem.static - ddp - fixed
        max_batch = max(0, int(room // per_example)) if per_example > 0 else batch
        hours = int(tc.total_samples) * train_flops / (gpus * acc.bf16_tflops * 1e12 * mfu) / 3600
        peak = mem.peak + ddp
        out.append(StagePlan(stage, preset, mem.parameters, fwd_flops, train_flops, batch, mem, ddp, peak, usable,
                             peak <= usable, max_batch, int(tc.total_samples), hours, note))
    return Plan(cfg.name, acc.name, gpus, acc.bf16_tflops, mfu, precision, tuple(out))


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB" if n >= GIB else f"{n / 2**20:,.1f} MiB"


def format_plan(plan: Plan) -> str:
    """The plan as Markdown: one column per stage."""
    s = plan.stages
    head = (f"Plan for `{plan.experiment}` on {plan.gpus} x {plan.device}: {plan.peak_tflops:,.1f} TFLOP/s "
            f"{'bf16 dense ' if 'CPU' not in plan.device else ''}peak each, at {plan.mfu:.0%} MFU; "
            f"{'bf16 autocast' if plan.precision == 'bf16' else 'fp32'}; memory traced with fake tensors (one whole training step), "
            f"usable {USABLE_FRACTION:.0%} of each device's memory\n")
    rows = [
        ("network preset", [p.preset for p in s]),
        ("parameters", [f"{p.parameters / 1e6:,.1f} M" for p in s]),
        ("forward GFLOPs / sample", [f"{p.forward_flops / 1e9:,.4g}" for p in s]),
        ("training GFLOPs / sample (3 x forward)", [f"{p.train_flops / 1e9:,.4g}" for p in s]),
        ("batch per device (global / gpus)", [f"{p.batch_per_device}" for p in s]),
        ("weights + AdamW + EMA (fp32)", [_gib(p.memory.static) for p in s]),
        ("activations (end of forward)", [_gib(p.memory.activations) for p in s]),
        ("step peak above weights (activations, grads, temporaries)", [_gib(p.memory.step_peak) for p in s]),
        ("DDP gradient buckets", [_gib(p.ddp_bytes) for p in s]),
        ("peak per device", [_gib(p.peak_bytes) for p in s]),
        ("usable per device", [_gib(p.usable_bytes) for p in s]),
        ("fits", ["yes" if p.fits else "**no**" for p in s]),
        ("largest batch per device that fits", [f"{p.max_batch_per_device}" for p in s]),
        ("samples to train", [f"{p.total_samples:,}" for p in s]),
        ("time at MFU", [f"{p.hours:,.1f} h ({p.hours / 24:,.1f} days)" for p in s]),
        ("GPU-hours", [f"{p.hours * plan.gpus:,.0f}" for p in s]),
    ]
    lines = [head, "| | " + " | ".join(f"{p.stage}" for p in s) + " |", "|---|" + "---|" * len(s)]
    lines += [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows]
    lines += [f"\n{p.stage}: {p.note}" for p in s if p.note]
    return "\n".join(lines)


def plan_dict(plan: Plan) -> dict:
    """The plan as JSON-ready data."""
    return {**{k: v for k, v in asdict(plan).items() if k != "stages"},
            "stages": {p.stage: {**p.metadata(), "memory": asdict(p.memory), "preset": p.preset, "note": p.note}
                       for p in plan.stages}}
