"""Standardised latents: the store records one shift per channel and one scale, and the decoder's z0 comes back exactly."""

import math

import numpy as np
import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.latents.standardize import Standardization
from ul_pipeline.latents.store import create_store, finalize_store, open_store
from ul_pipeline.stage2 import build_stage2_model
from ul_pipeline.stage2.training import load_base_model, train_stage2

META = {"encoder_sha256": "k" * 64, "stage1_config": {"preset": "tiny"}, "logsnr_0": 5.0,
        "dataset_manifest_sha256": "m" * 64, "split": "train"}


def kl_like_store(tmp_path, with_logvar: bool):
    """A store of KL-VAE-like latents: per-channel means 3, -1, 0, 2 and std about 2.2."""
    g = np.random.default_rng(0)
    n, shape = 12_000, (4, 8, 8)
    z = (np.array([3.0, -1.0, 0.0, 2.0])[None, :, None, None] + 2.2 * g.standard_normal((n, *shape))).astype(np.float32)
    logvar = np.full((n, *shape), math.log(0.25), dtype=np.float32) if with_logvar else None
    store = create_store(str(tmp_path / "kl.zarr"), n, shape, block_size=4000, meta=META, with_logvar=with_logvar)
    for b in range(3):
        s = slice(4000 * b, 4000 * (b + 1))
        store.write_block(b, z[s], np.zeros(4000, dtype=np.int64), [f"k{i}" for i in range(s.start, s.stop)],
                          None if logvar is None else logvar[s])
    return finalize_store(store), z


@pytest.mark.parametrize("with_logvar", [False, True])
def test_the_store_records_shift_and_scale_measured_on_all_training_latents(tmp_path, with_logvar):
    store, z = kl_like_store(tmp_path, with_logvar)
    meta = open_store(store.url).meta
    assert meta["latent_shift"] == pytest.approx([3.0, -1.0, 0.0, 2.0], abs=0.01)
    # one scale: the pooled std around the channel means, plus E[s^2] of a learned variance
    want = math.sqrt(2.2 ** 2 + (0.25 if with_logvar else 0.0))
    assert meta["latent_scale"] == pytest.approx(want, rel=0.01)
    st = open_store(store.url).standardization()
    u = st.forward(torch.from_numpy(z))
    assert u.mean((0, 2, 3)).abs().max() < 0.01 and u.std().item() == pytest.approx(2.2 / want, rel=0.01)


def test_the_decoders_z0_comes_back_exactly():
    # eq. A and B: u0 = alpha~ u + sigma~ eps at lambda~ = lambda0 + 2 log scale maps to alpha0 y + sigma0 eps
    st = Standardization((3.0, -1.0, 0.5, 2.0), 2.2)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(16, 4, 8, 8, generator=g, dtype=torch.float64) * 2 + 1
    eps = torch.randn(16, 4, 8, 8, generator=g, dtype=torch.float64)
    lam0 = 5.0
    lam_u = st.logsnr_0(lam0)
    assert lam_u == pytest.approx(lam0 + 2 * math.log(2.2))
    a_u, s_u = math.sqrt(1 / (1 + math.exp(-lam_u))), math.sqrt(1 / (1 + math.exp(lam_u)))
    a0, s0 = math.sqrt(1 / (1 + math.exp(-lam0))), math.sqrt(1 / (1 + math.exp(lam0)))
    u0 = a_u * st.forward(y) + s_u * eps
    torch.testing.assert_close(st.z0(u0, lam0), a0 * y + s0 * eps, rtol=0, atol=1e-12)


def test_a_standardised_base_model_ends_at_the_shifted_level_and_its_checkpoint_keeps_the_scale(tmp_path):
    cfg = load_config("smoke", ["stage2.standardize=true", "stage2.train.total_samples=64",
                                "stage2.train.batch_size=32", "compute.precision=fp32"])
    st = Standardization((0.5, 0.0, -0.5, 1.0), 3.0)
    model = build_stage2_model(cfg, (4, 8, 8), st)
    assert model.schedule.logsnr_max == pytest.approx(cfg.stage1.logsnr_0 + 2 * math.log(3.0))
    assert build_stage2_model(cfg, (4, 8, 8)).schedule.logsnr_max == cfg.stage1.logsnr_0
    z = torch.randn(64, 4, 8, 8) * 3 + 1
    train_stage2(cfg, z, torch.randint(0, 10, (64,)), tmp_path / "s2", standardization=st)
    base, _, meta = load_base_model(tmp_path / "s2" / "last.pt")
    assert base.standardization == st and meta["latent_standardization"] == st.to_dict()
    z0 = base.sample_z0(torch.arange(4), steps=4, generator=torch.Generator().manual_seed(0))
    assert z0.shape == (4, 4, 8, 8) and torch.isfinite(z0).all()
