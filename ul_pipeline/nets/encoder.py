"""Deterministic ResNet encoder x -> z_clean (paper sec. 4; a variance only for the learned-noise ablation).

Video (x of shape (C, T, H, W)) is downsampled in time by a NON-CAUSAL time patch: `time_patch`
consecutive frames are folded into channels before the first conv (16 frames -> 4 latent frames
with time_patch 4), and the 3x3x3 convs then mix neighbouring latent frames both ways. We chose
this over a causal encoder with the first frame on its own (MAGVIT-v2 / CogVideoX, 17 -> 5)
because our clips have a fixed length (`data.frames`), we do not train jointly on still images
(the main reason for the lone first frame), and the paper's stated shape is 16x128x128 ->
4x16x16. The price: context for frame prediction comes in whole groups of `time_patch` frames
(see ul_pipeline/video.py), so the paper's 5 context frames become 4 (one latent frame) here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Downsample, ResBlock, conv_nd, group_norm, patchify, time_patchify


class Encoder(nn.Module):
    """Space-to-depth patching, ResBlock stages with 2x downsampling between them, conv out."""

    def __init__(self, image_shape: Sequence[int], latent_channels: int, channels: Sequence[int],
                 blocks: Sequence[int], patch: int = 2, out_init_scale: float = 0.1,
                 predict_logvar: bool = False, time_patch: int = 1):
        super().__init__()
        if len(channels) != len(blocks) or not channels:
            raise ValueError(f"Encoder: channels {list(channels)} and blocks {list(blocks)} must be "
                             "non-empty lists of the same length")
        c, *spatial = image_shape
        self.dims = len(spatial)
        self.image_shape = tuple(image_shape)
        self.patch = patch
        self.time_patch = time_patch
        if time_patch > 1 and (self.dims != 3 or spatial[0] % time_patch):
            raise ValueError(f"Encoder: time_patch {time_patch} needs video (C, T, H, W) with T "
                             f"divisible by it; got {tuple(image_shape)}")
        if time_patch > 1:
            spatial[0] //= time_patch  # the latent (and every conv stage) has T / time_patch frames
        factor = patch * 2 ** (len(channels) - 1)  # total downsampling of the last two axes
        if spatial[-1] % factor or spatial[-2] % factor:
            raise ValueError(f"Encoder: image {tuple(image_shape)} is not divisible by the total "
                             f"downsampling factor {factor} (patch {patch}, {len(channels)} stages)")
        self.latent_shape = (latent_channels, *spatial[:-2], spatial[-2] // factor,
                             spatial[-1] // factor)

        self.conv_in = conv_nd(self.dims, c * time_patch * patch * patch, channels[0], 3, padding=1)
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
        x = time_patchify(x, self.time_patch)  # video: (B, C*pt, T/pt, H, W)
        h = self.conv_in(patchify(x, self.patch))  # (B, channels[0], *S/patch)
        for stage in self.stages:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C or 2C, *latent spatial)
