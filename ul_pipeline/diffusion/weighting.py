"""Loss weightings w(lambda) on the eps-MSE (docs/concepts/method.md, notation)."""

from __future__ import annotations

import torch
from torch import Tensor


def sigmoid_weight(logsnr: Tensor, bias: float) -> Tensor:
    """w = sigmoid(b - lambda): discounts low noise; on the eps-MSE never sigmoid(lambda - b)."""
    return torch.sigmoid(bias - logsnr)


def elbo_weight(logsnr: Tensor) -> Tensor:
    """w = 1: the unweighted ELBO, a true bound in nats (the prior must use this, eq. 3)."""
    return torch.ones_like(logsnr)
