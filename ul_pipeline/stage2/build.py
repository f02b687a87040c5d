"""The configured Stage-2 base model: one `BaseModel` interface for every kind of conditioning."""

from __future__ import annotations

from ul_pipeline.stage2.frame_conditioned import FrameConditionedBaseModel, context_latent_frames
from ul_pipeline.latents.standardize import Standardization
from ul_pipeline.stage2.model import BaseModel
from ul_pipeline.stage2.text_conditioned import TextConditionedBaseModel
from ul_pipeline.stage2.unconditional import UnconditionalBaseModel


def build_stage2_model(cfg, latent_shape: tuple[int, ...], standardization: Standardization | None = None
                       ) -> BaseModel:
    """The configured Stage-2 model: text-conditioned when stage2.text_conditioning is not none,
    frame-conditioned when stage2.context_frames > 0, unconditional when data.num_classes is 0, else the
    class-conditional BaseModel.

    `standardization` (the latent store's, when stage2.standardize) applies to images only.
    """
    context_frames = int(cfg.stage2.get("context_frames", 0))
    text = cfg.stage2.get("text_conditioning", "none")
    if text != "none":
        return text_conditioned_model(cfg, latent_shape, standardization)
    if not context_frames:
        model_class = UnconditionalBaseModel if int(cfg.data.num_classes) == 0 else BaseModel
        return model_class.from_config(cfg, latent_shape, standardization)
    if standardization is not None:
        raise ValueError("stage2.standardize: the frame-conditioned base model does not standardise its latents")
    from ul_pipeline.nets.presets import build_base_model

    k = context_latent_frames(context_frames, int(cfg.data.frames), int(latent_shape[1]))
    net = build_base_model(cfg.stage2.preset, tuple(latent_shape), cfg.data.num_classes, context=True)
    return FrameConditionedBaseModel(net, latent_shape, cfg.data.num_classes, context_latents=k,
                                     context_dropout=cfg.stage2.context_dropout,
                                     logsnr_0=cfg.stage1.logsnr_0, logsnr_min=cfg.stage2.logsnr_min,
                                     bias=cfg.stage2.bias, label_dropout=cfg.stage2.label_dropout)


def text_conditioned_model(cfg, latent_shape: tuple[int, ...], standardization: Standardization | None = None
                           ) -> TextConditionedBaseModel:
    """The text-to-image base model of stage2.preset: pooled-only or with cross-attention (stage2.text_conditioning)."""
    import copy

    from ul_pipeline.nets.presets import get_preset
    from ul_pipeline.nets.text_base import TextBaseViT

    net = TextBaseViT(tuple(latent_shape), cross=cfg.stage2.text_conditioning == "cross",
                      **copy.deepcopy(get_preset(cfg.stage2.preset).base))
    return TextConditionedBaseModel(net, latent_shape, logsnr_0=cfg.stage1.logsnr_0,
                                    logsnr_min=cfg.stage2.logsnr_min, bias=cfg.stage2.bias,
                                    label_dropout=cfg.stage2.label_dropout, standardization=standardization)
