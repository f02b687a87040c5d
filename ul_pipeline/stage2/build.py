"""The configured Stage-2 base model: one `BaseModel` interface for every kind of conditioning."""

from __future__ import annotations

from ul_pipeline.stage2.frame_conditioned import FrameConditionedBaseModel, context_latent_frames
from ul_pipeline.latents.standardize import Standardization
from ul_pipeline.stage2.model import BaseModel


def build_stage2_model(cfg, latent_shape: tuple[int, ...], standardization: Standardization | None = None
                       ) -> BaseModel:
    """The configured Stage-2 model: frame-conditioned when stage2.context_frames > 0, else BaseModel.

    `standardization` (the latent store's, when stage2.standardize) applies to images only.
    """
    context_frames = int(cfg.stage2.get("context_frames", 0))
    if not context_frames:
        return BaseModel.from_config(cfg, latent_shape, standardization)
    if standardization is not None:
        raise ValueError("stage2.standardize: the frame-conditioned base model does not standardise its latents")
    from ul_pipeline.nets.presets import build_base_model

    k = context_latent_frames(context_frames, int(cfg.data.frames), int(latent_shape[1]))
    net = build_base_model(cfg.stage2.preset, tuple(latent_shape), cfg.data.num_classes, context=True)
    return FrameConditionedBaseModel(net, latent_shape, cfg.data.num_classes, context_latents=k,
                                     context_dropout=cfg.stage2.context_dropout,
                                     logsnr_0=cfg.stage1.logsnr_0, logsnr_min=cfg.stage2.logsnr_min,
                                     bias=cfg.stage2.bias, label_dropout=cfg.stage2.label_dropout)
