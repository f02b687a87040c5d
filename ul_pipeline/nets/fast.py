"""The opt-in fast path of the transformer blocks (compute.fast_transformer), switched on per network.

Switching it on sets a flag on the network's modules: no parameter is added or reshaped and no random
number is drawn, so state dicts load either way and the switched-off path is the reference, bit for bit.
"""

from __future__ import annotations

from torch import nn

from .layers import Attention


def set_fast_transformer(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn the fast path of every attention layer under `module` on or off; returns `module`."""
    for m in module.modules():
        if isinstance(m, Attention):
            m.fast = enabled
    return module


def fast_optimizer_kwargs() -> dict:
    """AdamW keyword arguments of the fast path: one fused kernel over all parameters (CPU and CUDA)."""
    return {"fused": True}
