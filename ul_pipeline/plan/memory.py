"""Memory of one training step, traced with fake tensors: shapes and dtypes only, no weights, no compute.

`trace_step` builds the model inside torch's FakeTensorMode (so the `paper` preset costs no RAM), gives
AdamW its two moments and the EMA its copy, as after a first step, and then runs one whole training step
(forward under the run's autocast, backward, gradient clipping, AdamW, EMA) under a dispatch mode that
counts the bytes of every storage an operator creates and forgets them when the storage is freed. The
peak of those live bytes is the step's peak, as a caching allocator that frees at once would see it
(a real GPU adds the CUDA context and fragmentation: see ul_pipeline.plan.report.USABLE_FRACTION).
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive now (`current`) and at most (`peak`) since it started counting."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def track(self, tensor: Tensor) -> None:
        """Count `tensor`'s storage until it is freed (once, however many views share it)."""
        storage = tensor.untyped_storage()
        key = id(storage)  # storages keep one Python object while alive, so the id is theirs
        if key in self.sizes:
            return
        self.sizes[key] = storage.nbytes()
        self.current += self.sizes[key]
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self.track(t)
        return out


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one training step at `batch` examples per device."""

    batch: int
    parameters: int  # trainable parameters (count, not bytes)
    weights: int  # fp32 weights and buffers
    optimizer: int  # AdamW's two moments
    ema: int  # the EMA copy of weights and buffers
    activations: int  # alive at the end of the forward: what backward needs, plus the batch and the loss
    step_peak: int  # the most alive above weights, optimizer and EMA during the step (activations, gradients,
    # temporaries)

    @property
    def static(self) -> int:
        """Weights, optimizer state and EMA: what stays between steps."""
        return self.weights + self.optimizer + self.ema

    @property
    def peak(self) -> int:
        return self.static + self.step_peak


def trace_step(build: Callable[[], nn.Module], loss: Callable[[nn.Module, int], Tensor], batch: int,
               precision: str = "bf16", grad_clip: float = 1.0, fake: bool = True) -> StepMemory:
    """Trace one training step of `build()` with `loss(model, batch)` (which makes its own inputs) at `batch`.

    `precision` "bf16" runs the loss under CPU bf16 autocast (the op lists of CUDA's are nearly the same);
    `fake=False` runs the same step for real on the CPU (to check the trace against a measured peak).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ul_pipeline.train.ema import EMA

    with FakeTensorMode() if fake else nullcontext():
        torch.manual_seed(0)
        model = build()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
        for p in params:  # moments exist from here on, as after the first step
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema = EMA(model, 0.999)
        counter = LiveBytes()
        weights = _count(counter, model.state_dict().values())
        moments = _count(counter, [t for s in opt.state.values() for t in s.values() if isinstance(t, Tensor)])
        ema_bytes = _count(counter, ema.shadow.values())
        static, counter.peak = counter.current, counter.current
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        with counter:
            with autocast:
                value = loss(model, batch)
            activations = counter.current - static
            value.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            ema.update(model, 1)
            opt.zero_grad(set_to_none=True)
            del value
    return StepMemory(batch=batch, parameters=sum(p.numel() for p in params), weights=weights, optimizer=moments,
                      ema=ema_bytes, activations=activations, step_peak=counter.peak - static)


def _count(counter: LiveBytes, tensors) -> int:
    """Track `tensors` and return the bytes they added."""
    before = counter.current
    for t in tensors:
        counter.track(t)
    return counter.current - before
