"""Training FLOPs per example of each stage, counted once on the meta device (no weights, no compute).

A training step costs about 3x the forward FLOPs (forward, then backward for activations and for
weights). With it the training loop turns samples/s into achieved GFLOP/s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from ul_pipeline import config as config_lib

BACKWARD_FACTOR = 3.0  # forward + backward (2x forward): training FLOPs per forward FLOP


def forward_flops(calls: Sequence[tuple[nn.Module, tuple]]) -> int:
    """Sum of the forward FLOPs (2 per multiply-add) of each (network, batch-1 inputs) call."""
    from ul_pipeline.nets.presets import count_flops

    return sum(count_flops(net, *inputs) for net, inputs in calls)


def stage1_calls(cfg: DictConfig) -> dict[str, tuple[nn.Module, tuple]]:
    """The networks one Stage-1 example runs through, with batch-1 meta inputs: encoder, prior, decoder.

    A `stage1.prior: normal` ablation has no prior network (its L_z is closed form).
    """
    from ul_pipeline.nets.presets import build_stage1_nets

    s1, data = cfg.stage1, cfg.data
    image_shape = config_lib.sample_shape(data)  # (C, H, W) or video (C, T, H, W)
    with torch.device("meta"):
        encoder, prior, decoder = build_stage1_nets(s1.preset, image_shape, s1.latent_channels)
        x, z = torch.zeros(1, *image_shape), torch.zeros(1, *encoder.latent_shape)  # (1, C, H, W), (1, c, h, w)
        logsnr = torch.zeros(1)
    calls = {"encoder": (encoder, (x,)), "prior": (prior, (z, logsnr)), "decoder": (decoder, (x, logsnr, z))}
    if s1.get("prior", "diffusion") != "diffusion":
        del calls["prior"]
    return calls


def stage2_calls(cfg: DictConfig, latent_shape: Sequence[int]) -> dict[str, tuple[nn.Module, tuple]]:
    """The base model with batch-1 meta inputs (z_t, logsnr, label)."""
    from ul_pipeline.nets.presets import build_base_model

    with torch.device("meta"):
        base = build_base_model(cfg.stage2.preset, tuple(latent_shape), cfg.data.num_classes)
        inputs = (torch.zeros(1, *latent_shape), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    return {"base": (base, inputs)}


def stage1_train_flops(cfg: DictConfig) -> float:
    """Training FLOPs per Stage-1 example: 3 x (encoder + prior + decoder forward)."""
    return BACKWARD_FACTOR * forward_flops(list(stage1_calls(cfg).values()))


def stage2_train_flops(cfg: DictConfig, latent_shape: Sequence[int]) -> float:
    """Training FLOPs per Stage-2 example: 3 x the base model's forward."""
    return BACKWARD_FACTOR * forward_flops(list(stage2_calls(cfg, latent_shape).values()))
