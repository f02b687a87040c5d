"""data.hflip: Stage 1 trains on random mirrors, the store keeps latents of image and mirror, Stage 2 picks per draw."""

import numpy as np
import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.data import load_split_tensor, write_shards
from ul_pipeline.latents.store import open_store
from ul_pipeline.data.augment import hflip, pick_mirror, random_hflip
from ul_pipeline.lifecycle import encode_latents, run_stage1, run_stage2
from ul_pipeline.evaluation.metrics import to_float
from ul_pipeline.stage1.training import load_stage1

FAST = ["data.hflip=true", "stage1.train.total_samples=64", "stage2.train.total_samples=64", "compute.device=cpu"]


@pytest.fixture(scope="module")
def shards(fmnist_400_source, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("hflip") / "shards")
    write_shards(fmnist_400_source, url, shard_size=100, val_size=272, seed=0, resolution=32, channels=1,
                 num_classes=10)  # 128 train images
    return url


def test_hflip_is_off_by_default():
    assert load_config("smoke").data.hflip is False and load_config("demo").data.hflip is False


def test_random_hflip_and_pick_mirror_choose_per_example():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3).repeat(32, 1, 1, 1)  # (64, 1, 2, 3)
    g = torch.Generator().manual_seed(0)
    y = random_hflip(x, generator=g)
    mirrored = (y == hflip(x)).flatten(1).all(1)
    assert ((y == x).flatten(1).all(1) | mirrored).all() and 10 < int(mirrored.sum()) < 54
    z, zf = torch.zeros(64, 2, 2, 2), torch.ones(64, 2, 2, 2)
    picked = pick_mirror(z, zf, generator=torch.Generator().manual_seed(1))
    per_example = picked.flatten(1)
    assert ((per_example == 0).all(1) | (per_example == 1).all(1)).all() and 10 < int(per_example[:, 0].sum()) < 54


@pytest.mark.parametrize("shape", [(8, 1, 32, 32), (8, 1, 16, 32, 32)])
def test_flip_masks_broadcast_over_the_batch_axis_for_images_and_clips(shape):
    """A (B,) mask must select whole examples: a (8, 1, 16, 32, 32) batch stays that shape (a mask
    broadcast over the channel axis turned it into (8, 8, 16, 32, 32)) and each clip is either all
    mirrored or all as it was, in every frame."""
    x = torch.randn(shape)
    mixed = 0
    for seed in range(4):
        y = random_hflip(x, generator=torch.Generator().manual_seed(seed))
        assert y.shape == x.shape
        mirrored = (y == hflip(x)).flatten(1).all(1)
        assert ((y == x).flatten(1).all(1) | mirrored).all()  # per example, never per channel or frame
        mixed += 0 < int(mirrored.sum()) < shape[0]
        picked = pick_mirror(x, -x, generator=torch.Generator().manual_seed(seed))
        took = (picked == -x).flatten(1).all(1)
        assert picked.shape == x.shape and ((picked == x).flatten(1).all(1) | took).all()
        assert torch.equal(took, mirrored)  # the same draw: one mask per example, whatever the rank
    assert mixed  # a batch where some examples flip and others do not


def test_store_keeps_the_mirror_latents_the_encoder_gives_and_stage2_trains_on_them(shards, tmp_path):
    cfg = load_config("smoke", FAST)
    s1 = run_stage1(cfg, shards, tmp_path / "stage1")
    store_url = str(tmp_path / "latents.zarr")
    encode_latents(s1.checkpoint, shards, store_url, cfg=cfg)
    store = open_store(store_url)
    assert store.meta["hflip"] is True and store.z_clean_hflip is not None

    model, _, _ = load_stage1(s1.checkpoint)
    images, _, _ = load_split_tensor(shards, "train")
    with torch.no_grad():
        expect_flip = model.posterior(to_float(hflip(images))).z_clean.numpy()
        expect = model.posterior(to_float(images)).z_clean.numpy()
    got_flip = np.asarray(store.z_clean_hflip[:])
    assert got_flip.shape == expect_flip.shape == (128, *store.latent_shape)
    assert np.allclose(got_flip, expect_flip, atol=1e-5)  # the encoder applied to the flipped images
    assert np.allclose(np.asarray(store.z_clean[:]), expect, atol=1e-5)
    assert not np.allclose(got_flip, expect, atol=1e-3)  # a real mirror, not a copy

    result = run_stage2(cfg, store_url, tmp_path / "stage2")
    assert result.state.samples_seen == 64 and np.isfinite(result.history[-1]["loss_nats"])
