"""Stage 2: the base model's schedule is tied to lambda(0), label dropout, training and sampling."""

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.stage2 import BaseModel
from ul_pipeline.stage2.training import load_base_model, train_stage2


def test_most_precise_level_is_the_encoders_logsnr_0():
    for logsnr_0 in (5.0, 7.0):
        cfg = load_config("smoke", [f"stage1.logsnr_0={logsnr_0}"])
        model = BaseModel.from_config(cfg, (4, 8, 8))
        assert model.schedule.logsnr_max == logsnr_0
        assert model.schedule.logsnr(torch.zeros(1)).item() == pytest.approx(logsnr_0, abs=1e-5)


def test_label_dropout_uses_the_null_label_at_the_configured_rate():
    model = BaseModel.from_config(load_config("smoke", ["stage2.label_dropout=0.25"]), (4, 8, 8))
    g = torch.Generator().manual_seed(0)
    dropped = model.drop_labels(torch.zeros(40_000, dtype=torch.long), generator=g)
    assert set(dropped.unique().tolist()) == {0, 10}
    assert (dropped == 10).float().mean().item() == pytest.approx(0.25, abs=0.01)


def class_latents(n: int, seed: int = 0):
    """Latents whose mean depends on the class: something a class-conditional model can learn."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    z = 0.3 * torch.randn(n, 4, 8, 8, generator=g) + (labels.float() / 5 - 1).reshape(-1, 1, 1, 1)
    return z, labels


def test_training_lowers_the_loss_and_samples_have_the_latent_shape(tmp_path):
    z, labels = class_latents(512)
    cfg = load_config("smoke", ["stage2.train.total_samples=3200", "stage2.train.log_every_samples=320"])
    result = train_stage2(cfg, z, labels, tmp_path, extra={"encoder_sha256": "abc"})
    assert result.history[-1]["loss_nats"] < 0.7 * result.history[0]["loss_nats"]
    model, stored, meta = load_base_model(result.checkpoint)
    assert meta["encoder_sha256"] == "abc" and tuple(meta["latent_shape"]) == (4, 8, 8)
    g = torch.Generator().manual_seed(0)
    lab = torch.tensor([0, 9] * 32)
    for guidance in (0.0, 2.0):
        z0 = model.sample_z0(lab, steps=16, guidance=guidance, generator=g)
        assert z0.shape == (64, 4, 8, 8) and torch.isfinite(z0).all()
    # the conditional denoiser separates the classes the data separates (x_hat at lambda = 0)
    from ul_pipeline.diffusion import alpha_sigma, x_from_v

    alpha, sigma = alpha_sigma(torch.tensor(0.0))
    for lab in (0, 9):
        zc = z[labels == lab][:16]
        z_t = alpha * zc + sigma * torch.randn(zc.shape, generator=g)
        with torch.no_grad():
            x_hat = x_from_v(z_t, model.net(z_t, torch.zeros(16), torch.full((16,), lab)), alpha, sigma)
        assert x_hat.mean().item() == pytest.approx(zc.mean().item(), abs=0.15), lab
