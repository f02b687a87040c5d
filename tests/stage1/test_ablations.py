"""Stage-1 ablation switches (docs/concepts/method.md, ablations): each variant's loss in closed form, and the wiring."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from tests.oracles import gaussian_oracle
from ul_pipeline.config import load_config
from ul_pipeline.data import load_split_tensor
from ul_pipeline.latents.store import open_store
from ul_pipeline.data.shards import write_shards
from ul_pipeline.diffusion import alpha_sigma
from ul_pipeline.lifecycle import encode_latents, run_stage2
from ul_pipeline.stage1 import (DiffusionPrior, LatentPosterior, LearnedNoise, MSEDecoder, NormalPrior,
                                UnifiedLatents)
from ul_pipeline.stage1.training import train_stage1

from ul_pipeline.stage2.training import load_base_model

LOGSNR_0 = 5.0


def alpha0_sigma0(logsnr_0=LOGSNR_0):
    a, s = alpha_sigma(torch.tensor(logsnr_0))
    return a.item(), s.item()


def test_normal_prior_with_fixed_noise_is_the_closed_form_kl():
    """Table 5 row 3: L_z = 1/2 sum(alpha0^2 z^2 + sigma0^2 - log sigma0^2 - 1), per example."""
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(16, 4, 8, 8, generator=g)
    terms = NormalPrior(LOGSNR_0)(LatentPosterior(z, None, LOGSNR_0))
    a0, s0 = alpha0_sigma0()
    by_hand = 0.5 * (a0**2 * z**2 + s0**2 - math.log(s0**2) - 1).flatten(1).sum(1)
    by_torch = kl_divergence(Normal(a0 * z, s0), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(terms.terminal_nats, by_hand, rtol=1e-5)
    assert torch.allclose(terms.terminal_nats, by_torch, rtol=1e-4)
    assert torch.all(terms.diffusion_nats == 0) and torch.all(terms.noise_credit_nats == 0)


def test_normal_prior_with_learned_variance_is_the_vae_kl():
    """Learned noise: z0 ~ N(alpha0 m, alpha0^2 s^2 + sigma0^2); L_z = its KL to N(0, I)."""
    g = torch.Generator().manual_seed(1)
    m, logvar = torch.randn(8, 4, 8, 8, generator=g), torch.randn(8, 4, 8, 8, generator=g) - 3
    post = LatentPosterior(m, logvar, LOGSNR_0)
    a0, s0 = alpha0_sigma0()
    std = torch.sqrt(a0**2 * logvar.exp() + s0**2)
    expected = kl_divergence(Normal(a0 * m, std), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(NormalPrior(LOGSNR_0)(post).terminal_nats, expected, rtol=1e-4)
    # and the reparameterised z0 has that distribution
    big = LatentPosterior(torch.full((200_000, 1, 1, 1), 0.7), torch.full((200_000, 1, 1, 1), -2.0), LOGSNR_0)
    z0 = big.sample_z0(g)
    assert z0.mean().item() == pytest.approx(a0 * 0.7, abs=0.01)
    assert z0.var().item() == pytest.approx(a0**2 * math.exp(-2.0) + s0**2, rel=0.02)


@pytest.mark.parametrize("s_extra", [0.05, 0.5])
def test_learned_variance_diffusion_bound_is_exact_for_gaussian_latents(s_extra):
    """The derived bound E_y[ELBO(y)] - I(y; z0 | x) equals I(x; z0) with the optimal prior.

    Gaussian latents m ~ N(0, s_m^2) with extra std s: y ~ N(0, s_m^2 + s^2) has an exact optimal
    denoiser, and I(x; z0) = 1/2 log((1 + (s_m^2 + s^2) e^l0) / (1 + s^2 e^l0)) per dimension.
    """
    s_m, n, dims = 1.0, 40_000, 4
    g = torch.Generator().manual_seed(2)
    m = s_m * torch.randn(n, dims, 1, 1, generator=g)
    post = LatentPosterior(m, torch.full_like(m, math.log(s_extra**2)), LOGSNR_0)
    prior = DiffusionPrior(gaussian_oracle(0.0, math.sqrt(s_m**2 + s_extra**2)), -15.0, LOGSNR_0)
    terms = prior(post, g)
    lz = (terms.diffusion_nats + terms.terminal_nats - terms.noise_credit_nats) / dims  # nats per dim
    e = math.exp(LOGSNR_0)
    exact = 0.5 * math.log((1 + (s_m**2 + s_extra**2) * e) / (1 + s_extra**2 * e))
    stderr = lz.std().item() / math.sqrt(n)
    assert abs(lz.mean().item() - exact) < 4 * stderr + 0.02 * exact, (lz.mean().item(), exact, stderr)
    # without the credit it is still a bound, but a loose one: it counts the extra noise as information
    loose = ((terms.diffusion_nats + terms.terminal_nats) / dims).mean().item()
    assert loose > exact + 0.9 * 0.5 * math.log1p(s_extra**2 * e)


def test_mse_decoder_loss_is_scaled_squared_error_and_decoding_is_one_pass():
    image_shape = (1, 8, 8)

    def net(x_t, logsnr, z0):  # x_hat = mean of z0 broadcast over pixels, ignores x_t
        assert torch.all(x_t == 0) and torch.all(logsnr == 0)
        return z0.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).expand(-1, *image_shape)

    dec = MSEDecoder(net, image_shape, c_lf=1.5, sigma=0.2)
    g = torch.Generator().manual_seed(3)
    x, z0 = torch.rand(5, *image_shape, generator=g) * 2 - 1, torch.randn(5, 4, 2, 2, generator=g)
    x_hat = z0.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)
    expected = 1.5 * ((x - x_hat) ** 2).flatten(1).sum(1) / (2 * 0.2**2)
    assert torch.allclose(dec.loss_nats(x, z0), expected, rtol=1e-6)
    out1 = dec.decode(z0, 8, torch.Generator().manual_seed(0))
    out2 = dec.decode(z0, 32, torch.Generator().manual_seed(1))
    assert torch.equal(out1, out2) and torch.equal(out1, x_hat.clamp(-1, 1).expand_as(out1))


VARIANTS = {
    "normal_prior": ["stage1.prior=normal"],
    "mse_decoder": ["stage1.decoder_loss=mse"],
    "learned_noise": ["stage1.encoder_noise=learned"],
    "kl_vae": ["stage1.prior=normal", "stage1.decoder_loss=mse", "stage1.encoder_noise=learned",
               "stage1.latent_weight=0.01"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_switch_builds_the_variant_and_latent_weight_scales_only_lz(variant):
    cfg = load_config("smoke", VARIANTS[variant])
    torch.manual_seed(0)
    model = UnifiedLatents.from_config(cfg)
    s1 = cfg.stage1
    assert isinstance(model.prior, NormalPrior) == (s1.prior == "normal")
    assert isinstance(model.decoder, MSEDecoder) == (s1.decoder_loss == "mse")
    assert isinstance(model.noise, LearnedNoise) == (s1.encoder_noise == "learned")
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    terms = model.loss_terms(x, torch.Generator().manual_seed(0))
    assert torch.allclose(terms.total_nats, s1.latent_weight * terms.latent_nats + terms.decoder_nats)
    assert torch.isfinite(terms.total_nats).all() and torch.isfinite(terms.latent_nats).all()
    post = model.posterior(x)
    assert post.z_clean.shape == (4, *model.latent_shape)
    assert (post.logvar is not None) == (s1.encoder_noise == "learned")


def test_learned_variance_travels_through_the_store_into_stage2(tmp_path, fmnist_400_source):
    """The store keeps z_logvar beside z_clean and Stage 2 trains on draws from it."""
    cfg = load_config("smoke", ["stage1.encoder_noise=learned", "stage1.train.total_samples=64",
                                "stage2.train.total_samples=64"])
    shards = str(tmp_path / "shards")
    write_shards(fmnist_400_source, shards, shard_size=200, val_size=64, seed=0, resolution=32, channels=1,
                 num_classes=10)
    images, _, _ = load_split_tensor(shards, "train")
    result = train_stage1(cfg, images, tmp_path / "s1")
    encode_latents(result.checkpoint, shards, str(tmp_path / "z.zarr"), cfg=cfg)
    store = open_store(str(tmp_path / "z.zarr"))
    assert store.z_logvar is not None and store.z_logvar.shape == store.z_clean.shape
    assert store.meta["encode_seconds"] > 0
    run_stage2(cfg, str(tmp_path / "z.zarr"), tmp_path / "s2")
    _, _, meta = load_base_model(tmp_path / "s2" / "last.pt")
    assert meta["encode_seconds"] == store.meta["encode_seconds"]
