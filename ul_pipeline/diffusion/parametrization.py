"""v-prediction conversions: v = alpha eps - sigma x, x_t = alpha x + sigma eps."""

from __future__ import annotations

from torch import Tensor


def v_target(x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The v a network should predict."""
    return alpha * eps - sigma * x


def x_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x_hat = alpha x_t - sigma v."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps_hat = sigma x_t + alpha v."""
    return sigma * x_t + alpha * v


def v_from_x(x_t: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The v implied by a clean prediction x at x_t (for closed-form denoisers)."""
    eps = (x_t - alpha * x) / sigma
    return alpha * eps - sigma * x
