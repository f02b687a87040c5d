"""Deterministic ResNet encoder x -> z_clean (paper sec. 4; a variance only for the learned-noise ablation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Downsample, ResBlock, conv_nd, group_norm, patchify


class Encoder(nn.Module):
    """Space-to-depth patching, ResBlock stages with 2x downsampling between them, conv out."""

    def __init__(self, image_shape: Sequence[int], latent_channels: int, channels: Sequence[int],
                 blocks: Sequence[int], patch: int = 2, out_init_scale: float = 0.1,
                 predict_logvar: bool = False):
        super().__init__()
        if len(channels) != len(blocks) or not channels:
            raise ValueError(f"Encoder: channels {list(channels)} and blocks {list(blocks)} must be "
                             "non-empty lists of the same length")
        c, *spatial = image_shape
        self.dims = len(spatial)
        self.image_shape = tuple(image_shape)
        self.patch = patch
        factor = patch * 2 ** (len(channels) - 1)  # total downsampling of the last two axes
        if spatial[-1] % factor or spatial[-2] % factor:
            raise ValueError(f"Encoder: image {tuple(image_shape)} is not divisible by the total "
                             f"downsampling factor {factor} (patch {patch}, {len(channels)} stages)")
        self.latent_shape = (latent_channels, *spatial[:-2], spatial[-2] // factor,
                             spatial[-1] // factor)

        self.conv_in = conv_nd(self.dims, c * patch * patch, channels[0], 3, padding=1)
        self.stages = nn.ModuleList()
        ch = channels[0]
        for i, (out_ch, n) in enumerate(zip(channels, blocks)):
            stage = nn.Sequential()
            if i > 0:
                stage.append(Downsample(self.dims, ch))
            for _ in range(n):
                stage.append(ResBlock(self.dims, ch, out_ch))
                ch = out_ch
            self.stages.append(stage)
        self.norm_out = group_norm(ch)
        # with predict_logvar the output is [z_clean, log-variance] on the channel axis (2C channels)
        self.conv_out = conv_nd(self.dims, ch, latent_channels * (2 if predict_logvar else 1), 3, padding=1)
        # Scale of the initial latents (x PyTorch's default init). Small: latents start with few bits
        # and grow where c_lf pays (tiny, unit tests). Large: latents start informative, so there
        # is something for the decoder to learn to read; on short runs this only helps together
        # with stage1.encoder_hold_samples, which keeps the prior from squeezing z0 before then.
        with torch.no_grad():
            self.conv_out.weight.mul_(out_init_scale)
            self.conv_out.bias.zero_()
            self.conv_out.weight[latent_channels:].zero_()  # log-variance head starts at its offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(patchify(x, self.patch))  # (B, channels[0], *S/patch)
        for stage in self.stages:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C or 2C, *latent spatial)
