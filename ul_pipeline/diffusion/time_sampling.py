"""Training-time sampling of diffusion times t in [0, 1] (separate from sampler discretisation)."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_time(batch: int, *, antithetic: bool = True, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """t ~ U(0,1) per example; antithetic = low-discrepancy (u + i/B) mod 1, still uniform marginally."""
    if antithetic:
        u = torch.rand((), generator=generator, device=device)
        return torch.remainder(u + torch.arange(batch, device=device) / batch, 1.0)
    return torch.rand(batch, generator=generator, device=device)
