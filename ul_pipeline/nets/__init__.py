"""Networks of Unified Latents: encoder, latent prior, U-ViT decoder and the stage-2 base model."""

from .base import BaseViT
from .decoder import DecoderUViT
from .encoder import Encoder
from .layers import (Block, Downsample, LogSNREmbedding, ResBlock, Upsample, conv_nd, patchify,
                     unpatchify)
from .presets import (PRESETS, Preset, build_base_model, build_stage1_nets, count_flops,
                      count_parameters, get_preset)
from .prior import PriorViT

__all__ = [
    "BaseViT", "Block", "DecoderUViT", "Downsample", "Encoder", "LogSNREmbedding", "PRESETS",
    "Preset", "PriorViT", "ResBlock", "Upsample", "build_base_model", "build_stage1_nets",
    "conv_nd", "count_flops", "count_parameters", "get_preset", "patchify", "unpatchify",
]
