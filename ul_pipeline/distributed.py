"""The one place that knows about data parallelism (torch.distributed under torchrun).

Like nanoGPT, one script runs on 1 process or N: without torchrun's environment (`RANK`,
`WORLD_SIZE`, ...) everything here is a no-op and rank 0 of 1. No other module reads those
variables. gloo on CPU, NCCL on CUDA; the collective timeout comes from `compute.dist_timeout_s`
so a hung rank fails the group instead of waiting forever.

Random draws of a training step are rank-invariant: inside `batch_share(offset, global_size)` the
draw helpers (`randn`, `rand`, `example_positions`) draw for the whole global batch from the
step's shared seed and keep this rank's rows, so example i of the global batch gets the same noise
and time on 1 rank or 8. With one rank they are exactly today's draws.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    """This process's place in the group: global rank, number of processes, rank on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> World:
    """The World torchrun describes in the environment (rank 0 of 1 without torchrun)."""
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise RuntimeError(f"torchrun environment RANK/WORLD_SIZE/LOCAL_RANK is not an integer: {e}") from None


def world() -> World:
    """The initialised group's World, else the environment's."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), env_world().local_rank)
    return env_world()


def init(device: torch.device, timeout_s: float = 600.0) -> World:
    """Join the torchrun group once (gloo on CPU, NCCL on CUDA); pins this rank's GPU. No-op on 1 process."""
    w = env_world()
    if w.size == 1 or dist.is_initialized():
        return world()
    if device.type == "cuda":
        torch.cuda.set_device(w.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
    # a group restarted by torchrun --max-restarts meets in the same store (the agent's, kept across
    # rounds): keys of the dead group (the old ranks' addresses) must not be read by the new one, so
    # each group meets under a prefix of its own. Not TORCHELASTIC_RESTART_COUNT: it is per agent,
    # and an agent restarted for another node's failure keeps its count, so the nodes would differ.
    generation = _generation(store, rank, size, timeout)
    dist.init_process_group(backend, store=dist.PrefixStore(f"ul/generation_{generation}", store), rank=rank,
                            world_size=size, timeout=timeout)
    return world()


def _generation(store: dist.Store, rank: int, size: int, timeout: datetime.timedelta) -> int:
    """A number all ranks of this group agree on and no earlier group in `store` used.

    Rank 0 takes the next number from a store counter and publishes it; every other rank reads it
    and answers with a nonce, which rank 0 echoes. A number left by a dead group is never echoed,
    so a rank that read one keeps reading until this group's rank 0 has published its own.
    """
    if rank == 0:
        generation = store.add("ul/generation", 1)
        store.set("ul/generation/current", str(generation))
        for r in range(1, size):
            hello = f"ul/generation_{generation}/hello/{r}"
            store.wait([hello], timeout)
            store.set(f"ul/generation_{generation}/welcome/{r}", store.get(hello))
        return generation
    nonce, seen = uuid.uuid4().hex.encode(), None
    deadline = time.monotonic() + timeout.total_seconds()
    while time.monotonic() < deadline:
        if store.check(["ul/generation/current"]):
            current = int(store.get("ul/generation/current"))
            if current != seen:
                seen = current
                store.set(f"ul/generation_{seen}/hello/{rank}", nonce)
            welcome = f"ul/generation_{seen}/welcome/{rank}"
            if store.check([welcome]) and store.get(welcome) == nonce:
                return seen
        time.sleep(0.05)
    raise TimeoutError(f"rank {rank}: rank 0 did not publish this group's store generation within "
                       f"compute.dist_timeout_s={timeout.total_seconds():g} s (last seen: {seen})")


def local_device(device: torch.device) -> torch.device:
    """cuda -> cuda:LOCAL_RANK under torchrun; other devices unchanged."""
    if device.type == "cuda" and device.index is None and env_world().size > 1:
        return torch.device("cuda", env_world().local_rank)
    return device


def shutdown() -> None:
    """Leave the group (end of a torchrun entry point)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op on 1 process)."""
    if world().size > 1:
        dist.barrier()


def mean_over_ranks(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """The rank mean of each float (same keys on every rank); the dict itself on 1 process."""
    if world().size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world().size).tolist()))


def share(global_size: int, w: World | None = None) -> tuple[int, int]:
    """(offset, count) of this rank's equal share of a global batch; an uneven split is an error."""
    w = w or world()
    if global_size % w.size:
        raise ValueError(f"train.batch_size {global_size} (the global batch) is not divisible by the "
                         f"world size {w.size}; choose a multiple of the number of processes")
    count = global_size // w.size
    return w.rank * count, count


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `module` on more than one process; the module itself otherwise."""
    if world().size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def main_first() -> Iterator[bool]:
    """Rank 0 runs the block first (e.g. writes a file), the others after it; yields is_main."""
    w = world()
    if not w.is_main:
        barrier()
    yield w.is_main
    if w.is_main:
        barrier()


# ---- rank-invariant random draws -------------------------------------------------------------

_SHARE: contextvars.ContextVar[tuple[int, int, int] | None] = contextvars.ContextVar("batch_share", default=None)


@contextlib.contextmanager
def batch_share(offset: int, count: int, global_size: int) -> Iterator[None]:
    """Within this block, draws of `count` rows are rows [offset, offset + count) of a global-batch draw."""
    token = _SHARE.set((offset, count, global_size))
    try:
        yield
    finally:
        _SHARE.reset(token)


def _global_rows(shape: tuple[int, ...]) -> tuple[tuple[int, ...], slice]:
    current = _SHARE.get()
    if current is None or not shape:
        return tuple(shape), slice(None)
    offset, count, global_size = current
    if shape[0] != count:
        raise ValueError(f"a batch-shaped draw of {shape[0]} rows inside batch_share of {count} rows: "
                         "training draws must have the batch as their first axis")
    return (global_size, *shape[1:]), slice(offset, offset + shape[0])


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
    """torch.randn of a batch-shaped tensor, rank-invariant under batch_share."""
    full, rows = _global_rows(tuple(shape))
    return torch.randn(full, generator=generator, device=device, dtype=dtype)[rows]


def rand(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
    """torch.rand of a batch-shaped tensor, rank-invariant under batch_share."""
    full, rows = _global_rows(tuple(shape))
    return torch.rand(full, generator=generator, device=device, dtype=dtype)[rows]


def example_positions(batch: int, device=None) -> tuple[Tensor, int]:
    """(positions of this batch's examples in the global batch, global batch size)."""
    current = _SHARE.get()
    offset, _, global_size = (0, batch, batch) if current is None else current
    return torch.arange(offset, offset + batch, device=device), global_size
