"""Training Stage 1 (encoder, prior and decoder together) and loading its checkpoints: what the CLI and the assets call."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import torch
from omegaconf import DictConfig
from torch import Tensor

from ul_pipeline import config as config_lib
from ul_pipeline.data.augment import random_hflip
from ul_pipeline.evaluation.metrics import to_float
from ul_pipeline.stage1.batches import in_memory_batches
from ul_pipeline.stage1.model import UnifiedLatents
from ul_pipeline.train.batch_source import BatchSource
from ul_pipeline.train.checkpoint import read_checkpoint
from ul_pipeline.train.flops import stage1_train_flops
from ul_pipeline.train.loop import Callback, TrainResult, train
from ul_pipeline.train.runtime import load_weights, setup_compute


def encoder_hold(hold_samples: int, warmup_samples: int) -> Callable[[int], float]:
    """Encoder lr factor: 0 for `hold_samples`, then a linear ramp to 1 over `warmup_samples`.

    While the encoder holds still, the prior learns what its latents cost and the decoder learns to
    read them. Released at once, an untrained prior's loose bound outprices an untrained decoder's
    gain and the encoder shrinks its output until the decoder ignores z0, a state it does not leave.
    """
    def factor(samples_seen: int) -> float:
        return min(1.0, max(0.0, samples_seen - hold_samples) / max(1, warmup_samples))
    return factor


def train_stage1(cfg: DictConfig, images: Tensor, run_dir: str | Path,
                 callbacks: Iterable[Callback] = (), extra: dict | None = None) -> TrainResult:
    """Train encoder, prior and decoder jointly on uint8 images (N, C, H, W) held in RAM; resumes from run_dir."""
    return train_stage1_from(cfg, in_memory_batches(cfg, images), run_dir, callbacks, extra)


def train_stage1_from(cfg: DictConfig, batches: BatchSource, run_dir: str | Path,
                      callbacks: Iterable[Callback] = (), extra: dict | None = None) -> TrainResult:
    """Train encoder, prior and decoder jointly on a batch source of images (stage1.batches); resumes from run_dir."""
    device, precision = setup_compute(cfg)
    torch.manual_seed(cfg.stage1.train.seed)  # initial weights
    model = UnifiedLatents.from_config(cfg)
    # both terms divided by the same constant (sec. 2.6), so gradient clipping sees O(1) values
    scale = 1.0 / math.prod(model.image_shape)

    flip = cfg.data.hflip

    def loss_fn(m: UnifiedLatents, batch):
        x = batches.named(batch)["image"]
        x = random_hflip(x) if flip else x  # the loop seeds each step: a resumed run flips alike
        terms = m.loss_terms(to_float(x))
        summary = terms.summary(m.image_shape, m.latent_shape)
        if m.rate is not None:  # this step used the current beta; the next one follows the rate error
            summary["latent_weight"] = m.rate.update(summary["bits_per_pixel"])
        return terms.total_nats.mean() * scale, summary

    tc = cfg.stage1.train
    hold = cfg.stage1.encoder_hold_samples
    lr_multipliers = {"encoder.": encoder_hold(hold, tc.warmup_samples)} if hold > 0 else None
    return train(model, loss_fn, batches, tc, run_dir, kind="stage1", config=config_lib.to_dict(cfg),
                 device=device, precision=precision, callbacks=callbacks, lr_multipliers=lr_multipliers,
                 flops_per_example=stage1_train_flops(cfg), compile=cfg.compute.compile,
                 fast=cfg.compute.fast_transformer,
                 extra={"image_shape": list(model.image_shape), "latent_shape": list(model.latent_shape),
                        **(extra or {})})


def load_stage1(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
                ) -> tuple[UnifiedLatents, DictConfig, dict]:
    """(model in eval mode with EMA weights, its stored config, the checkpoint dict minus weights)."""
    ckpt, sha256 = read_checkpoint(path, kind="stage1")  # one read: the hash is that of these weights
    cfg = config_lib.from_dict(ckpt["config"])
    model = UnifiedLatents.from_config(cfg)
    load_weights(model, ckpt["ema" if ema else "model"], path)
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}
    meta["sha256"] = sha256
    return model.to(device).eval(), cfg, meta
