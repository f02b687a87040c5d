"""What every training run sets up the same way: device and precision, this rank's batches, loading weights."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from ul_pipeline import distributed
from ul_pipeline.train.batches import ShuffledBatches
from ul_pipeline.train.checkpoint import CheckpointError
from ul_pipeline.train.loop import resolve_device, resolve_precision


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


def share_of(tc, *arrays: Tensor, fields: tuple[str, ...] | None = None) -> ShuffledBatches:
    """This rank's share of every global batch of `arrays` held in RAM (all of it on one process), named `fields`."""
    offset, count = distributed.share(tc.batch_size)
    return ShuffledBatches(*arrays, batch_size=tc.batch_size, seed=tc.seed, offset=offset, count=count, fields=fields)


def load_weights(model: torch.nn.Module, state_dict: dict, path: str | Path) -> None:
    """Weights into `model`, or a CheckpointError naming the file when they do not fit."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not fit the network its config builds: {e}") from None
