"""Exponential moving average of a model's weights (the weights every stage is evaluated and used with)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """Exponential moving average of parameters and buffers, with a warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1.0 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        for k, v in sd.items():
            self.shadow[k].copy_(v)
