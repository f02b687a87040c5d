"""Range and choice checks on a merged config that a type alone cannot express.

`validate` runs after every merge (loading.py); each failure is a `ConfigError` that names the key.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from ul_pipeline.config.schema import DATA_SOURCES, VIDEO_SOURCES, ConfigError


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {msg}")


def validate(cfg: DictConfig, stored: bool = False) -> None:
    """Range and choice checks that a type alone cannot express.

    stored: the config of a checkpoint that already trained (`from_dict`); checks that only refuse a setting that
    would not do what it says (pi without a target) are left out, so such a checkpoint still loads."""
    _check(cfg.data.source in DATA_SOURCES, "data.source", f"must be one of {', '.join(DATA_SOURCES)}, got '{cfg.data.source}'")
    _check(cfg.data.frames >= 0, "data.frames", "must be >= 0 (0 = still images)")
    _check(cfg.data.fps > 0, "data.fps", "must be > 0")
    _check(cfg.data.frames > 0 or cfg.data.source not in VIDEO_SOURCES, "data.frames",
           f"source '{cfg.data.source}' yields clips: set data.frames > 0")
    _check(cfg.data.channels in (1, 3), "data.channels", f"must be 1 or 3, got {cfg.data.channels}")
    _check(cfg.data.num_classes > 0 or (cfg.data.num_classes == 0 and (not cfg.sample.guidance or cfg.stage2.text_conditioning != "none")), "data.num_classes", "must be >= 0, and 0 (unconditional) with sample.guidance 0")
    _check(cfg.data.resolution >= 8, "data.resolution", "must be >= 8")
    _check(cfg.data.shard_size > 0, "data.shard_size", "must be > 0")
    _check(cfg.data.shuffle_buffer >= 1, "data.shuffle_buffer", "must be >= 1 (samples per streaming window)")
    _check(cfg.compute.workers >= 0, "compute.workers", "must be >= 0 (0 = read in the training process)")
    _check(cfg.stage1.c_lf > 0, "stage1.c_lf", "must be > 0")
    _check(cfg.stage1.prior in ("diffusion", "normal"), "stage1.prior",
           f"must be diffusion or normal, got '{cfg.stage1.prior}'")
    _check(cfg.stage1.decoder_loss in ("diffusion", "mse"), "stage1.decoder_loss",
           f"must be diffusion or mse, got '{cfg.stage1.decoder_loss}'")
    _check(cfg.stage1.encoder_noise in ("fixed", "learned"), "stage1.encoder_noise",
           f"must be fixed or learned, got '{cfg.stage1.encoder_noise}'")
    _check(cfg.stage1.mse_sigma > 0, "stage1.mse_sigma", "must be > 0")
    _check(cfg.stage1.latent_weight > 0, "stage1.latent_weight", "must be > 0")
    _check(0 <= cfg.stage1.target_bits_per_pixel < math.inf, "stage1.target_bits_per_pixel",
           "must be finite and >= 0 (0 = beta fixed)")
    _check(0 < cfg.stage1.rate_gain < math.inf, "stage1.rate_gain", "must be finite and > 0")
    _check(cfg.stage1.rate_control in ("integral", "pi"), "stage1.rate_control", "must be integral or pi")
    _check(stored or cfg.stage1.rate_control == "integral" or cfg.stage1.target_bits_per_pixel > 0,
           "stage1.rate_control",
           "is pi, but stage1.target_bits_per_pixel is 0 (beta fixed): the law would never run; set a target")
    _check(not (cfg.stage2.standardize and cfg.data.frames), "stage2.standardize",
           "is for still images; the frame-conditioned base model does not standardise its latents")
    _check(cfg.eval.num_generated >= 0, "eval.num_generated", "must be >= 0 (0 = eval.num_samples)")
    _check(cfg.eval.kid_reference_size >= 0, "eval.kid_reference_size", "must be >= 0 (0 = off)")
    _check(cfg.stage1.encoder_hold_samples >= 0, "stage1.encoder_hold_samples", "must be >= 0")
    _check(cfg.stage1.prior_logsnr_min < cfg.stage1.logsnr_0, "stage1.prior_logsnr_min", "must be below stage1.logsnr_0")
    _check(cfg.stage1.decoder_logsnr_min < cfg.stage1.decoder_logsnr_max, "stage1.decoder_logsnr_min",
           "must be below stage1.decoder_logsnr_max")
    _check(cfg.stage2.logsnr_min < cfg.stage1.logsnr_0, "stage2.logsnr_min", "must be below stage1.logsnr_0")
    _check(0.0 <= cfg.stage2.label_dropout < 1.0, "stage2.label_dropout", "must be in [0, 1)")
    _check(cfg.stage2.text_conditioning in ("none", "pooled", "cross"), "stage2.text_conditioning",
           f"must be none, pooled or cross, got '{cfg.stage2.text_conditioning}'")
    _check(cfg.stage2.text_conditioning == "none" or not cfg.data.frames, "stage2.text_conditioning",
           "is for still images (data.frames = 0)")
    _check(0.0 <= cfg.stage2.context_dropout < 1.0, "stage2.context_dropout", "must be in [0, 1)")
    _check(0 <= cfg.stage2.context_frames < max(1, cfg.data.frames), "stage2.context_frames",
           f"must be in [0, data.frames={cfg.data.frames}) (0 for images)")
    _check(not (cfg.stage2.context_frames and (cfg.data.hflip or cfg.stage1.encoder_noise == "learned")),
           "stage2.context_frames", "is not supported with data.hflip or stage1.encoder_noise: learned (the latent "
           "store keeps one context encoding, z_clean_context, without mirror or variance)")
    iv = cfg.sample.guidance_interval
    _check(iv is None or (len(iv) == 2 and iv[0] <= iv[1]), "sample.guidance_interval",
           f"must be null or [lo, hi] with lo <= hi (base-model log-SNRs), got {iv}")
    _check(cfg.encode.dtype in ("float32", "float16"), "encode.dtype", "must be float32 or float16")
    _check(cfg.compute.precision in ("auto", "fp32", "bf16"), "compute.precision", "must be auto, fp32 or bf16")
    for key in ("nproc_per_node", "nnodes"):
        _check(cfg.compute[key] >= 1, f"compute.{key}", "must be >= 1")
    _check(cfg.compute.max_restarts >= 0, "compute.max_restarts", "must be >= 0")
    _check(cfg.compute.dist_timeout_s > 0, "compute.dist_timeout_s", "must be > 0 (seconds)")
    for stage in ("stage1", "stage2"):
        t = cfg[stage].train
        _check(t.batch_size > 0, f"{stage}.train.batch_size", "must be > 0")
        _check(t.total_samples > 0, f"{stage}.train.total_samples", "must be > 0")
        _check(0.0 <= t.ema_decay < 1.0, f"{stage}.train.ema_decay", "must be in [0, 1)")
        _check(0 <= t.cooldown_samples <= t.total_samples, f"{stage}.train.cooldown_samples",
               "must be in [0, total_samples]")
    from ul_pipeline.nets.presets import PRESETS  # local: presets import torch modules

    for key in ("stage1.preset", "stage2.preset"):
        name = OmegaConf.select(cfg, key)
        _check(name in PRESETS, key, f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
