"""Evaluation fixtures: a cheap stand-in for Inception and a tiny trained Stage 1 + base model."""

import numpy as np
import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.data import write_shards
from ul_pipeline.train.checkpoint import file_sha256
from ul_pipeline.stage1.training import train_stage1

from ul_pipeline.stage2.training import train_stage2

EVAL = ["eval.fid=true", "eval.num_samples=16", "eval.grid_size=4", "sample.decoder_steps=2", "sample.steps=2",
        "sample.batch_size=8", "stage1.train.total_samples=32", "stage2.train.total_samples=32"]


class FakeFeatures:
    """A cheap stand-in for Inception: a fixed random projection of the pixels; counts its calls."""

    identity = "fake-projection-16"

    def __init__(self, dim: int = 16):
        self.weight = torch.randn(32 * 32, dim, generator=torch.Generator().manual_seed(0))
        self.calls: list[int] = []

    def __call__(self, images, progress=None):
        self.calls.append(len(images))
        if progress is not None:
            progress(len(images), len(images))
        return (images[:, 0].float().flatten(1) / 255 @ self.weight).numpy().astype(np.float64)


def make_shards(source, url, seed):
    return write_shards(source, url, shard_size=100, val_size=40, seed=seed, resolution=32, channels=1,
                        num_classes=10, overwrite=True)


@pytest.fixture(scope="module")
def trained(fmnist_400, fmnist_400_source, tmp_path_factory):
    """Shards, a one-step Stage-1 checkpoint and a one-step base model on its (random) latents."""
    root = tmp_path_factory.mktemp("fidref")
    shards = str(root / "shards")
    make_shards(fmnist_400_source, shards, seed=0)
    cfg = load_config("smoke", EVAL)
    images = torch.nn.functional.pad(torch.from_numpy(fmnist_400[0][:64]).unsqueeze(1), (2, 2, 2, 2))
    s1 = train_stage1(cfg, images, root / "s1").checkpoint
    z, labels = torch.randn(64, 4, 8, 8), torch.randint(0, 10, (64,))
    s2 = train_stage2(cfg, z, labels, root / "s2", extra={"encoder_sha256": file_sha256(s1), "encode_seconds": 1.5})
    return cfg, shards, s1, s2.checkpoint
