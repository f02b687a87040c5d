"""Named network presets (`tiny`, `small`, `paper`), builders, and parameter / FLOP counters.

Run `python -m ul_pipeline.nets` for a markdown table of sizes and forward FLOPs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .base import BaseViT
from .decoder import DecoderUViT
from .encoder import Encoder
from .prior import PriorViT


@dataclass(frozen=True)
class Preset:
    """Constructor kwargs of every network for one named size."""

    name: str
    latent_channels: int  # channels of z (the latent's spatial size follows from the encoder)
    encoder: dict[str, Any]  # Encoder kwargs except image_shape, latent_channels
    prior: dict[str, Any]  # PriorViT kwargs except latent_shape
    decoder: dict[str, Any]  # DecoderUViT kwargs except image_shape, latent_shape
    base: dict[str, Any]  # BaseViT kwargs except latent_shape, num_classes
    description: str


_SMALL = Preset(
    name="small",
    latent_channels=4,
    encoder=dict(channels=[32, 64], blocks=[2, 2], patch=2, out_init_scale=5.0),
    prior=dict(width=128, depth=2, heads=4),
    decoder=dict(channels=[32, 64], blocks=[2, 2], width=128, depth=2, heads=4, patch=2),
    base=dict(widths=[128, 256], blocks=[2, 4], heads=[4, 8]),
    description="CPU scale: 32x32x{1,3} images -> 8x8x4 latents, same design as paper",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="tiny",
            latent_channels=4,
            encoder=dict(channels=[16, 32], blocks=[1, 1], patch=2),
            prior=dict(width=32, depth=1, heads=2),
            decoder=dict(channels=[16, 32], blocks=[1, 1], width=32, depth=1, heads=2, patch=2),
            base=dict(widths=[32, 64], blocks=[2, 2], heads=[2, 4]),
            description="unit tests: 32x32 -> 8x8 (16x16 -> 4x4) latents, sub-second CPU steps",
        ),
        _SMALL,
        replace(_SMALL, name="small_narrow_base", base=dict(widths=[64, 128], blocks=[2, 4], heads=[2, 4]),
                description="`small` with a base model of half the width: about a quarter of its FLOPs"),
        Preset(
            name="paper",
            latent_channels=32,
            encoder=dict(channels=[128, 256, 512, 512], blocks=[2, 2, 2, 3], patch=2, out_init_scale=5.0),
            prior=dict(width=1024, depth=8, heads=16),
            decoder=dict(channels=[128, 256, 512], blocks=[2, 2, 2], width=1024, depth=8,
                         heads=16, dropout=0.1, patch=2),
            base=dict(widths=[512, 1024], blocks=[6, 16], heads=[8, 16], dropout=0.1),
            description="paper sec. 4, ImageNet 512x512 -> 32x32x32 latents",
        ),
        # Video: the same networks on (C, T, H, W) clips; time_patch folds 4 frames into one latent
        # frame (non-causal, see nets/encoder.py), space goes down as for images.
        Preset(
            name="video_tiny",
            latent_channels=4,
            encoder=dict(channels=[16, 32], blocks=[1, 1], patch=2, time_patch=4),
            prior=dict(width=32, depth=1, heads=2),
            decoder=dict(channels=[16, 32], blocks=[1, 1], width=32, depth=1, heads=2, patch=2,
                         time_patch=4),
            base=dict(widths=[32, 64], blocks=[2, 2], heads=[2, 4]),
            description="unit tests: 8x16x16 clips -> 2x4x4x4 latents (4x in time, 4x in space)",
        ),
        Preset(
            name="video_small",
            latent_channels=4,
            encoder=dict(channels=[32, 64], blocks=[1, 1], patch=2, time_patch=4, out_init_scale=5.0),
            prior=dict(width=128, depth=2, heads=4),
            decoder=dict(channels=[32, 64], blocks=[1, 1], width=128, depth=2, heads=4, patch=2,
                         time_patch=4),
            base=dict(widths=[128, 256], blocks=[2, 4], heads=[4, 8]),
            description="CPU demo: 16x32x32 clips -> 4x8x8x4 latents",
        ),
        Preset(
            name="video_paper",
            latent_channels=32,
            encoder=dict(channels=[128, 256, 512], blocks=[2, 2, 2], patch=2, time_patch=4,
                         out_init_scale=5.0),
            prior=dict(width=1024, depth=8, heads=16),
            decoder=dict(channels=[128, 256, 512], blocks=[2, 2, 2], width=1024, depth=8,
                         heads=16, dropout=0.1, patch=2, time_patch=4),
            base=dict(widths=[512, 1024], blocks=[6, 16], heads=[8, 16], dropout=0.1),
            description="paper Kinetics-600 setting: 16x128x128 clips -> 4x16x16x32 latents",
        ),
    ]
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; KeyError naming it and the known presets otherwise."""
    if name not in PRESETS:
        raise KeyError(f"unknown network preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]


def build_stage1_nets(name: str, image_shape: Sequence[int],
                      latent_channels: Optional[int] = None, predict_logvar: bool = False
                      ) -> tuple[Encoder, PriorViT, DecoderUViT]:
    """Encoder, prior and decoder of preset `name` for images of `image_shape` (C, *spatial).

    `predict_logvar`: the encoder also outputs a log-variance per latent element (learned noise).
    """
    preset = get_preset(name)
    encoder = Encoder(image_shape, latent_channels or preset.latent_channels,
                      predict_logvar=predict_logvar, **copy.deepcopy(preset.encoder))
    prior = PriorViT(encoder.latent_shape, **copy.deepcopy(preset.prior))
    decoder = DecoderUViT(image_shape, encoder.latent_shape, **copy.deepcopy(preset.decoder))
    return encoder, prior, decoder


def build_base_model(name: str, latent_shape: Sequence[int], num_classes: int,
                     context: bool = False) -> BaseViT:
    """Stage-2 base model of preset `name` for latents of `latent_shape` (C, *spatial);
    `context`: video latents (C, t, h, w) whose first frames may be given (frame prediction)."""
    return BaseViT(latent_shape, num_classes=num_classes, context=context,
                   **copy.deepcopy(get_preset(name).base))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (works on meta-device modules)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the fused CPU attention kernel, which FlopCounterMode does not know by itself."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flops_on(module: nn.Module, inputs: Sequence[Any], device: torch.device) -> int:
    """Forward FLOPs of `module(*inputs)` with weights and inputs placed on `device`."""
    state = {n: t.to(device) for n, t in [*module.named_parameters(), *module.named_buffers()]}
    if device.type == "meta":
        state = {n: torch.empty_like(t, device="meta") for n, t in state.items()}
    inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
    # the CPU fused attention kernel has no registered formula; count it like the other SDPA kernels
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops})
    with torch.no_grad(), counter:
        functional_call(module, state, tuple(inputs))
    return counter.get_total_flops()


def count_flops(module: nn.Module, *example_inputs: Any) -> int:
    """Forward FLOPs (2 per multiply-add) of `module(*example_inputs)`, on the meta device if possible."""
    try:
        return _flops_on(module, example_inputs, torch.device("meta"))
    except (NotImplementedError, RuntimeError):
        device = next(module.parameters()).device
        if device.type == "meta":
            raise
        return _flops_on(module, example_inputs, device)


def _example_inputs(image_shape: Sequence[int], latent_shape: Sequence[int], num_classes: int,
                    device: str = "meta") -> dict[str, tuple[torch.Tensor, ...]]:
    """Batch-1 example inputs for each network."""
    x = torch.zeros(1, *image_shape, device=device)
    z = torch.zeros(1, *latent_shape, device=device)
    logsnr = torch.zeros(1, device=device)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    return dict(encoder=(x,), prior=(z, logsnr), decoder=(x, logsnr, z), base=(z, logsnr, labels))


def size_table(rows: Sequence[tuple[str, Sequence[int], int]] = (
        ("tiny", (1, 32, 32), 10), ("small", (1, 32, 32), 10), ("small", (3, 32, 32), 10),
        ("paper", (3, 512, 512), 1000), ("video_tiny", (1, 8, 16, 16), 10),
        ("video_small", (1, 16, 32, 32), 10), ("video_paper", (3, 16, 128, 128), 600))) -> str:
    """Markdown table of parameters and forward FLOPs per network for (preset, image_shape, classes)."""
    lines = ["| preset | image | latent | network | params (M) | fwd GFLOPs / example |",
             "|---|---|---|---|---|---|"]
    for name, image_shape, num_classes in rows:
        with torch.device("meta"):  # no real weights: the paper preset builds instantly
            encoder, prior, decoder = build_stage1_nets(name, image_shape)
            base = build_base_model(name, encoder.latent_shape, num_classes)
        inputs = _example_inputs(image_shape, encoder.latent_shape, num_classes)
        nets = dict(encoder=encoder, prior=prior, decoder=decoder, base=base)
        for net_name, net in nets.items():
            lines.append(
                f"| {name} | {'x'.join(map(str, image_shape))} "
                f"| {'x'.join(map(str, encoder.latent_shape))} | {net_name} "
                f"| {count_parameters(net) / 1e6:.2f} "
                f"| {count_flops(net, *inputs[net_name]) / 1e9:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(size_table())
