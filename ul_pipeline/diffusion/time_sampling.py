"""Training-time sampling of diffusion times t in [0, 1] (separate from sampler discretisation)."""

from __future__ import annotations

import torch
from torch import Tensor

from ul_pipeline import distributed


def sample_time(batch: int, *, antithetic: bool = True, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """t ~ U(0,1) per example; antithetic = low-discrepancy (u + i/B) mod 1, still uniform marginally."""
    if antithetic:
        u = torch.rand((), generator=generator, device=device)
        positions, global_batch = distributed.example_positions(batch, device)  # arange(B), B on 1 rank
        return torch.remainder(u + positions / global_batch, 1.0)
    return distributed.rand((batch,), generator=generator, device=device)
