"""Stage 1 and Stage 2 training runs and checkpoint loading: what the CLI and the assets call."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import torch
from omegaconf import DictConfig
from torch import Tensor

from ul_pipeline import config as config_lib
from ul_pipeline import distributed
from ul_pipeline.data.augment import pick_mirror, random_hflip
from ul_pipeline.evaluation.metrics import to_float
from ul_pipeline.latents.standardize import Standardization
from ul_pipeline.stage1 import UnifiedLatents
from ul_pipeline.stage2 import BaseModel
from ul_pipeline.stage2.build import build_stage2_model
from ul_pipeline.train.batches import ShuffledBatches
from ul_pipeline.train.checkpoint import CheckpointError, file_sha256, load_checkpoint
from ul_pipeline.train.flops import stage1_train_flops, stage2_train_flops
from ul_pipeline.train.loop import Callback, TrainResult, resolve_device, resolve_precision, train


def setup_compute(cfg: DictConfig) -> tuple[torch.device, str]:
    """Device and precision from cfg.compute; joins the torchrun group if there is one; TF32 on CUDA."""
    device = resolve_device(cfg.compute.device)
    distributed.init(device, cfg.compute.dist_timeout_s)
    if cfg.compute.deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.compute.tf32
        torch.backends.cudnn.allow_tf32 = cfg.compute.tf32
    return device, resolve_precision(cfg.compute.precision, device)


def _share_of(tc, *arrays: Tensor) -> ShuffledBatches:
    """This rank's share of every global batch of `arrays` (all of it on one process)."""
    offset, count = distributed.share(tc.batch_size)
    return ShuffledBatches(*arrays, batch_size=tc.batch_size, seed=tc.seed, offset=offset, count=count)


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
    """Train encoder, prior and decoder jointly on uint8 images (N, C, H, W); resumes from run_dir."""
    expected = config_lib.sample_shape(cfg.data)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"stage 1 images have shape {tuple(images.shape[1:])}, config data.channels/"
                         f"data.frames/data.resolution expect {expected}")
    device, precision = setup_compute(cfg)
    torch.manual_seed(cfg.stage1.train.seed)  # initial weights
    model = UnifiedLatents.from_config(cfg)
    # both terms divided by the same constant (sec. 2.6), so gradient clipping sees O(1) values
    scale = 1.0 / math.prod(model.image_shape)

    flip = cfg.data.hflip

    def loss_fn(m: UnifiedLatents, batch):
        x = random_hflip(batch[0]) if flip else batch[0]  # the loop seeds each step: a resumed run flips alike
        terms = m.loss_terms(to_float(x))
        summary = terms.summary(m.image_shape, m.latent_shape)
        if m.rate is not None:  # this step used the current beta; the next one follows the rate error
            summary["latent_weight"] = m.rate.update(summary["bits_per_pixel"])
        return terms.total_nats.mean() * scale, summary

    tc = cfg.stage1.train
    batches = _share_of(tc, images)
    hold = cfg.stage1.encoder_hold_samples
    lr_multipliers = {"encoder.": encoder_hold(hold, tc.warmup_samples)} if hold > 0 else None
    return train(model, loss_fn, batches, tc, run_dir, kind="stage1", config=config_lib.to_dict(cfg),
                 device=device, precision=precision, callbacks=callbacks, lr_multipliers=lr_multipliers,
                 flops_per_example=stage1_train_flops(cfg), compile=cfg.compute.compile,
                 extra={"image_shape": list(model.image_shape), "latent_shape": list(model.latent_shape),
                        **(extra or {})})


def train_stage2(cfg: DictConfig, z_clean: Tensor, labels: Tensor, run_dir: str | Path,
                 callbacks: Iterable[Callback] = (), extra: dict | None = None,
                 z_logvar: Tensor | None = None, z_clean_hflip: Tensor | None = None,
                 standardization: Standardization | None = None) -> TrainResult:
    """Train the base model on cached z_clean (N, C, h, w) with int labels (N,); resumes from run_dir.

    `z_logvar` (N, C, h, w): a learned encoder variance; each draw then uses z_clean + s eps.
    `z_clean_hflip` (N, C, h, w): latents of the mirrored images (data.hflip); each draw picks one.
    `standardization`: the store's latent shift and scale (stage2.standardize); the checkpoint keeps it.
    """
    device, precision = setup_compute(cfg)
    latent_shape = tuple(z_clean.shape[1:])
    torch.manual_seed(cfg.stage2.train.seed)
    model = build_stage2_model(cfg, latent_shape, standardization)
    scale = 1.0 / math.prod(latent_shape)

    def loss_fn(m: BaseModel, batch):
        z, extra = batch[0].float(), dict(zip(names, batch[2:]))
        if "z_clean_hflip" in extra:  # the image's latent or its mirror's, drawn afresh each step
            z = pick_mirror(z, extra["z_clean_hflip"].float())
        z_lv = extra["z_logvar"].float() if "z_logvar" in extra else None
        terms = m.loss_terms(z, batch[1].long(), z_logvar=z_lv)
        return terms.weighted_nats.mean() * scale, terms.summary()

    tc = cfg.stage2.train
    named = {"z_logvar": z_logvar, "z_clean_hflip": z_clean_hflip}
    names = [k for k, v in named.items() if v is not None]
    arrays = (z_clean, labels, *(named[k] for k in names))
    batches = _share_of(tc, *arrays)
    return train(model, loss_fn, batches, tc, run_dir, kind="stage2", config=config_lib.to_dict(cfg),
                 device=device, precision=precision, callbacks=callbacks,
                 flops_per_example=stage2_train_flops(cfg, latent_shape), compile=cfg.compute.compile,
                 extra={"latent_shape": list(latent_shape), **(extra or {}),
                        "latent_standardization": None if standardization is None else standardization.to_dict()})


def load_stage1(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
                ) -> tuple[UnifiedLatents, DictConfig, dict]:
    """(model in eval mode with EMA weights, its stored config, the checkpoint dict minus weights)."""
    ckpt = load_checkpoint(path, kind="stage1")
    cfg = config_lib.from_dict(ckpt["config"])
    model = UnifiedLatents.from_config(cfg)
    _load_weights(model, ckpt["ema" if ema else "model"], path)
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}
    meta["sha256"] = file_sha256(path)
    return model.to(device).eval(), cfg, meta


def load_base_model(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
                    ) -> tuple[BaseModel, DictConfig, dict]:
    """(base model in eval mode with EMA weights, its stored config, the checkpoint dict minus weights)."""
    ckpt = load_checkpoint(path, kind="stage2")
    cfg = config_lib.from_dict(ckpt["config"])
    model = build_stage2_model(cfg, tuple(ckpt["latent_shape"]),
                               Standardization.from_dict(ckpt.get("latent_standardization")))
    _load_weights(model, ckpt["ema" if ema else "model"], path)
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}
    meta["sha256"] = file_sha256(path)
    return model.to(device).eval(), cfg, meta


def _load_weights(model: torch.nn.Module, state_dict: dict, path: str | Path) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not fit the network its config builds: {e}") from None
