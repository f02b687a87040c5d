"""Training a Stage-2 base model on cached latents and loading its checkpoints: what the CLI and the assets call."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import torch
from omegaconf import DictConfig
from torch import Tensor

from ul_pipeline import config as config_lib
from ul_pipeline.data.augment import pick_mirror
from ul_pipeline.latents.standardize import Standardization
from ul_pipeline.stage2.build import build_stage2_model
from ul_pipeline.stage2.model import BaseModel
from ul_pipeline.train.batch_source import BatchSource
from ul_pipeline.train.checkpoint import read_checkpoint
from ul_pipeline.train.flops import stage2_train_flops
from ul_pipeline.train.loop import Callback, TrainResult, train
from ul_pipeline.train.runtime import load_weights, setup_compute, share_of


def train_stage2(cfg: DictConfig, z_clean: Tensor, labels: Tensor, run_dir: str | Path,
                 callbacks: Iterable[Callback] = (), extra: dict | None = None,
                 z_logvar: Tensor | None = None, z_clean_hflip: Tensor | None = None,
                 z_clean_context: Tensor | None = None, standardization: Standardization | None = None) -> TrainResult:
    """Train the base model on cached z_clean (N, C, h, w) with int labels (N,) held in RAM; resumes from run_dir.

    `z_logvar` (N, C, h, w): a learned encoder variance; each draw then uses z_clean + s eps.
    `z_clean_hflip` (N, C, h, w): latents of the mirrored images (data.hflip); each draw picks one.
    `z_clean_context` (N, C, t, h, w): video frame prediction (stage2.context_frames), required there: the
    encoding of each clip padded after its context frames; its first latent frames are the context.
    `standardization`: the store's latent shift and scale (stage2.standardize); the checkpoint keeps it.
    """
    if z_clean_context is not None and z_clean_context.shape != z_clean.shape:
        raise ValueError(f"train_stage2 needs z_clean_context shaped like z_clean {tuple(z_clean.shape)} (the "
                         f"latent store's), got {tuple(z_clean_context.shape)}")
    named = {"z_clean": z_clean, "labels": labels, "z_logvar": z_logvar, "z_clean_hflip": z_clean_hflip,
             "z_clean_context": z_clean_context}
    fields = tuple(k for k, v in named.items() if v is not None)
    batches = share_of(cfg.stage2.train, *(named[k] for k in fields), fields=fields)
    return train_stage2_from(cfg, batches, tuple(z_clean.shape[1:]), run_dir, callbacks, extra, standardization)


def train_stage2_from(cfg: DictConfig, batches: BatchSource, latent_shape: tuple[int, ...], run_dir: str | Path,
                      callbacks: Iterable[Callback] = (), extra: dict | None = None,
                      standardization: Standardization | None = None) -> TrainResult:
    """Train the base model on a batch source of latents (stage2.batches: fields z_clean, labels and, when
    the store has them, z_logvar, z_clean_hflip and, for frame prediction, z_clean_context); resumes from run_dir."""
    device, precision = setup_compute(cfg)
    torch.manual_seed(cfg.stage2.train.seed)
    model = build_stage2_model(cfg, latent_shape, standardization)
    if getattr(model, "context_latents", 0) and "z_clean_context" not in batches.fields:
        raise ValueError(f"stage2.context_frames={cfg.stage2.context_frames}: train_stage2 needs z_clean_context "
                         f"(the latent store's), the batches hold {batches.fields}")
    scale = 1.0 / math.prod(latent_shape)

    def loss_fn(m: BaseModel, batch):
        named = batches.named(batch)
        z = named["z_clean"].float()
        if "z_clean_hflip" in named:  # the image's latent or its mirror's, drawn afresh each step
            z = pick_mirror(z, named["z_clean_hflip"].float())
        z_lv = named["z_logvar"].float() if "z_logvar" in named else None
        terms = m.loss_terms(z, named["labels"].long(), z_logvar=z_lv, **m.batch_conditioning(named))
        return terms.weighted_nats.mean() * scale, terms.summary()

    tc = cfg.stage2.train
    return train(model, loss_fn, batches, tc, run_dir, kind="stage2", config=config_lib.to_dict(cfg),
                 device=device, precision=precision, callbacks=callbacks,
                 flops_per_example=stage2_train_flops(cfg, latent_shape), compile=cfg.compute.compile,
                 fast=cfg.compute.fast_transformer,
                 extra={"latent_shape": list(latent_shape), **(extra or {}),
                        "latent_standardization": None if standardization is None else standardization.to_dict()})


def load_base_model(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
                    ) -> tuple[BaseModel, DictConfig, dict]:
    """(base model in eval mode with EMA weights, its stored config, the checkpoint dict minus weights)."""
    ckpt, sha256 = read_checkpoint(path, kind="stage2")  # one read: the hash is that of these weights
    cfg = config_lib.from_dict(ckpt["config"])
    model = build_stage2_model(cfg, tuple(ckpt["latent_shape"]),
                               Standardization.from_dict(ckpt.get("latent_standardization")))
    load_weights(model, ckpt["ema" if ema else "model"], path)
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}
    meta["sha256"] = sha256
    return model.to(device).eval(), cfg, meta
