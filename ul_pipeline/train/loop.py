"""One generic training loop: AdamW, warm-up, clipping, EMA, bf16 autocast, callbacks, resume.

Progress is counted in samples seen (global, over all ranks); every random draw of a step is
seeded from (seed, samples_seen) and drawn for the whole global batch (ul_pipeline.distributed),
so a run interrupted and re-run, or run on another number of processes, ends with the same
weights up to float summation order. Under torchrun the model is wrapped in DDP, each rank takes
its share of every global batch, and rank 0 alone writes checkpoints and calls the callbacks.
Every checkpoint records `train_seconds`, the wall time spent training summed over all resumptions.
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from ul_pipeline import distributed
from ul_pipeline.data.storage import write_file_atomic
from ul_pipeline.nets.fast import set_fast_transformer
from ul_pipeline.train.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from ul_pipeline.train.ema import EMA
from ul_pipeline.train.run_lock import run_folder_lock
from ul_pipeline.train.seeding import derive_seed

LossFn = Callable[[nn.Module, tuple[Tensor, ...]], tuple[Tensor, dict[str, float]]]


@dataclass
class TrainState:
    step: int = 0
    samples_seen: int = 0


class Callback:
    """Hooks the loop calls; Dagster, tqdm and logging enter here, the loop never sees them."""

    def on_start(self, state: TrainState, total_samples: int) -> None: ...
    def on_step(self, state: TrainState, loss: float) -> None: ...
    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, state: TrainState, path: Path) -> None: ...
    def on_end(self, state: TrainState) -> None: ...


@dataclass
class TrainResult:
    model: nn.Module  # raw weights
    ema_model: nn.Module  # EMA weights (use these downstream)
    state: TrainState
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    train_seconds: float = 0.0  # wall time of training, summed over all resumptions of this run


def resolve_device(device: str = "auto") -> torch.device:
    """auto -> cuda when available, else cpu; plain cuda is this rank's GPU under torchrun."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.local_device(torch.device(device))


class _LossModule(nn.Module):
    """model + loss_fn as one module, so DDP's forward hooks see the whole loss computation."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        return self.loss_fn(self.model, batch)


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), so bf16 autocast pays."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # x86 only in torch 2.14
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(precision: str, device: torch.device):
    """A bf16 autocast context for precision "bf16" (after resolve_precision), else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA and on CPUs with native bf16, fp32 on other CPUs."""
    if precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return "bf16" if native else "fp32"
    return precision


def _param_groups(model: nn.Module, lr_multipliers: dict[str, Callable[[int], float]]
                  ) -> tuple[list[dict], list[Callable[[int], float]]]:
    """AdamW parameter groups (the rest first, then one per prefix) and each group's lr factor."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups, multipliers, taken = [], [], set()
    for prefix, fn in lr_multipliers.items():
        params = [p for n, p in named if n.startswith(prefix)]
        if not params:
            raise ValueError(f"lr_multipliers: no trainable parameter of {type(model).__name__} starts "
                             f"with {prefix!r}")
        groups.append({"params": params})
        multipliers.append(fn)
        taken.update(id(p) for p in params)
    rest = [p for _, p in named if id(p) not in taken]
    return [{"params": rest}, *groups], [lambda _: 1.0, *multipliers]


def train(model: nn.Module, loss_fn: LossFn, batches: Callable[[int], Iterator[tuple[Tensor, ...]]],
          train_cfg: Any, run_dir: str | Path, *, kind: str, config: dict, device: torch.device | str = "cpu",
          precision: str = "fp32", callbacks: Iterable[Callback] = (), extra: dict | None = None,
          lr_multipliers: dict[str, Callable[[int], float]] | None = None,
          flops_per_example: float | None = None, compile: bool = False, fast: bool = False) -> TrainResult:
    """Train `model` until train_cfg.total_samples, resuming from run_dir/last.pt when it exists.

    loss_fn(model, batch) returns (scalar loss, metrics of plain floats). `batches(samples_seen)`
    yields this process's share of each global batch (train_cfg.batch_size) starting at that global
    sample position; a BatchSource (ul_pipeline.train.batch_source) also puts its position in every
    checkpoint (`loader`) and checks it on resume. Every log entry holds `data_wait_s` and
    `compute_s`, the mean seconds per step spent waiting for a batch and computing with it (a loader
    that cannot keep up shows as data_wait_s). `config` is the resolved experiment config
    stored in every checkpoint; `extra` is stored alongside (e.g. hashes of upstream artifacts).
    `lr_multipliers` maps a parameter-name prefix (e.g. "encoder.") to f(samples_seen), a factor
    on the learning rate of the parameters under it; the others follow the plain schedule.
    `precision` "bf16" runs loss_fn under bf16 autocast on any device (weights, optimiser and EMA
    stay fp32; the loss math casts network outputs to fp32). `flops_per_example` (training FLOPs
    of one example, ~3x forward) adds `gflops_per_s` to the logged metrics. `compile` runs the
    loss computation through torch.compile. `fast` (compute.fast_transformer) turns on the networks'
    fast attention (ul_pipeline.nets.fast) and a fused AdamW: the same math, rounded differently.

    Rank 0 locks run_dir for the whole run: a second run of the folder fails at once (RunFolderBusy).
    Non-finite weights are never saved (save_checkpoint: FloatingPointError, the last good one stays).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16 (resolve 'auto' with resolve_precision), got {precision!r}")
    with run_folder_lock(run_dir) if distributed.world().is_main else nullcontext():
        return _train(model, loss_fn, batches, train_cfg, Path(run_dir), kind=kind, config=config, device=device,
                      precision=precision, callbacks=callbacks, extra=extra, lr_multipliers=lr_multipliers,
                      flops_per_example=flops_per_example, compile=compile, fast=fast)


def _train(model: nn.Module, loss_fn: LossFn, batches: Callable[[int], Iterator[tuple[Tensor, ...]]],
           train_cfg: Any, run_dir: Path, *, kind: str, config: dict, device: torch.device | str,
           precision: str, callbacks: Iterable[Callback], extra: dict | None,
           lr_multipliers: dict[str, Callable[[int], float]] | None, flops_per_example: float | None,
           compile: bool, fast: bool) -> TrainResult:
    """`train` inside the run folder's lock."""
    device = torch.device(device)
    ckpt_path = run_dir / "last.pt"
    w = distributed.world()
    callbacks = list(callbacks) if w.is_main else []  # logs, progress, Dagster: rank 0 only
    offset, share = distributed.share(train_cfg.batch_size, w)
    model.to(device)
    set_fast_transformer(model, fast)
    groups, multipliers = _param_groups(model, lr_multipliers or {})
    optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, betas=tuple(train_cfg.betas),
                                  weight_decay=train_cfg.weight_decay, fused=True if fast else None)
    ema = EMA(model, train_cfg.ema_decay)
    state, history, seconds_before = TrainState(), [], 0.0
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, kind=kind, map_location=str(device))
        check_resumable(ckpt, config, ckpt_path, kind, inputs=extra)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # this run's choice, not the checkpoint's (it stores `fused`)
            group["fused"] = True if fast else None
        ema.load_state_dict(ckpt["ema"])
        state = TrainState(ckpt["step"], ckpt["samples_seen"])
        history = ckpt.get("history", [])
        seconds_before = float(ckpt.get("train_seconds", 0.0))
        if hasattr(batches, "check_position"):  # a streamed source refuses what it cannot continue exactly
            batches.check_position(ckpt.get("loader"), ckpt_path)
        if w.is_main:  # a kill between last.pt and metrics.jsonl left it behind the checkpoint
            write_metrics(run_dir, history)
    t_start = time.perf_counter()

    def train_seconds() -> float:
        """Wall time of this run so far, plus that of the runs it resumes."""
        return seconds_before + time.perf_counter() - t_start

    def checkpoint() -> Path:
        if not w.is_main:
            distributed.barrier()  # the file is complete when the others go on
            return ckpt_path
        save_checkpoint(ckpt_path, {
            "kind": kind, "model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "step": state.step, "samples_seen": state.samples_seen,
            "complete": state.samples_seen >= train_cfg.total_samples, "config": config,
            "history": history, "train_seconds": train_seconds(), **(extra or {}),
            "loader": batches.position(state.samples_seen) if hasattr(batches, "position") else None,
        })
        write_metrics(run_dir, history)
        distributed.barrier()
        for cb in callbacks:
            cb.on_checkpoint(state, ckpt_path)
        return ckpt_path

    for cb in callbacks:
        cb.on_start(state, train_cfg.total_samples)
    running: dict[str, float] = {}
    n_running, t_last = 0, time.perf_counter()
    batch_iter = batches(state.samples_seen)
    model.train()
    loss_module: nn.Module = _LossModule(model, loss_fn)
    if compile:
        loss_module = torch.compile(loss_module)
    loss_module = distributed.wrap_ddp(loss_module, device)
    while state.samples_seen < train_cfg.total_samples:
        torch.manual_seed(derive_seed(train_cfg.seed, 0, state.samples_seen))  # noise, t: same on every rank
        t_wait = time.perf_counter()
        batch = tuple((b.pin_memory() if device.type == "cuda" else b).to(device, non_blocking=True)
                      for b in next(batch_iter))
        t_compute = time.perf_counter()
        if len(batch[0]) != share:
            raise ValueError(f"the batch source gave {len(batch[0])} examples, this rank's share of "
                             f"train.batch_size={train_cfg.batch_size} over {w.size} processes is {share}")
        after = state.samples_seen + train_cfg.batch_size  # schedules are evaluated at the end of this step
        lr = train_cfg.lr * lr_factor(after, train_cfg)
        for group, multiplier in zip(optimizer.param_groups, multipliers):
            group["lr"] = lr * multiplier(after)
        with autocast(precision, device), distributed.batch_share(offset, share, train_cfg.batch_size):
            loss, step_metrics = loss_module(*batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at samples_seen={state.samples_seen} "
                                     f"(step {state.step}); last checkpoint: {ckpt_path}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                     if train_cfg.grad_clip > 0 else torch.tensor(float("nan")))
        optimizer.step()
        ema.update(model, state.step)
        prev = state.samples_seen
        state.step += 1
        state.samples_seen += train_cfg.batch_size
        lrs = {f"lr_{prefix.rstrip('.')}": g["lr"]
               for prefix, g in zip(lr_multipliers or {}, optimizer.param_groups[1:])}
        metrics = {**step_metrics, "grad_norm": float(grad_norm), "lr": lr, **lrs}  # float() waits for the device
        metrics.update(data_wait_s=t_compute - t_wait, compute_s=time.perf_counter() - t_compute)  # s per step
        for k, v in metrics.items():
            running[k] = running.get(k, 0.0) + v
        n_running += 1
        for cb in callbacks:
            cb.on_step(state, loss.item())
        done = state.samples_seen >= train_cfg.total_samples
        if done or _crossed(prev, state.samples_seen, train_cfg.log_every_samples):
            now = time.perf_counter()
            logged = distributed.mean_over_ranks({k: v / n_running for k, v in running.items()}, device)
            logged.update(step=state.step, samples_seen=state.samples_seen,
                          samples_per_s=n_running * train_cfg.batch_size / max(now - t_last, 1e-9))
            if flops_per_example:
                logged["gflops_per_s"] = logged["samples_per_s"] * flops_per_example / 1e9
            history.append(logged)
            for cb in callbacks:
                cb.on_log(state, logged)
            running, n_running, t_last = {}, 0, now
        if done or _crossed(prev, state.samples_seen, train_cfg.checkpoint_every_samples):
            checkpoint()
    for cb in callbacks:
        cb.on_end(state)
    ema_model = copy.deepcopy(model)
    ema_model.load_state_dict(ema.state_dict())
    ema_model.eval()
    return TrainResult(model, ema_model, state, history, ckpt_path, train_seconds())


def write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    """run_dir/metrics.jsonl: the checkpoint's log entries, one JSON line each, written atomically (and only
    when it differs), so a kill never leaves half a line and a resumed or reused run repairs a stale file."""
    path, text = run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history)
    if not (path.exists() and path.read_text() == text):
        write_file_atomic(path, lambda f: f.write(text.encode()))


def lr_factor(samples_seen: int, train_cfg: Any) -> float:
    """Learning-rate factor at `samples_seen`: linear warm-up, constant, then linear cool-down to 0."""
    warmup = min(1.0, samples_seen / max(1, train_cfg.warmup_samples))
    cooldown = getattr(train_cfg, "cooldown_samples", 0)
    if cooldown <= 0:
        return warmup
    return min(warmup, max(0.0, (train_cfg.total_samples - samples_seen) / cooldown))


def _crossed(before: int, after: int, every: int) -> bool:
    """True when [before, after) contains a multiple of `every` past zero."""
    return every > 0 and math.floor(after / every) > math.floor(before / every)
