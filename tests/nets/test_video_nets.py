"""Video networks: time downsampling shapes of every video preset, and the L_z bound on 3-D latents."""

import math

import pytest
import torch

from tests.oracles import gaussian_oracle
from ul_pipeline.nets import PRESETS, build_base_model, build_stage1_nets, count_parameters
from ul_pipeline.nets.layers import time_patchify, time_unpatchify
from ul_pipeline.stage1.posterior import LatentPosterior
from ul_pipeline.stage1.priors import DiffusionPrior

# (preset, clip shape (C, T, H, W), expected latent shape (C, t, h, w), run on CPU?)
VIDEO_CASES = [
    ("video_tiny", (1, 8, 16, 16), (4, 2, 4, 4), True),
    ("video_small", (1, 16, 32, 32), (4, 4, 8, 8), True),
    ("video_small", (3, 16, 32, 32), (4, 4, 8, 8), True),
    ("video_paper", (3, 16, 128, 128), (32, 4, 16, 16), False),  # meta device: no real weights
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small networks: one thread


def test_every_video_preset_is_covered():
    assert {c[0] for c in VIDEO_CASES} == {n for n in PRESETS if n.startswith("video_")}


def test_time_patchify_round_trip_groups_consecutive_frames():
    x = torch.randn(2, 3, 8, 4, 4)
    y = time_patchify(x, 4)
    assert y.shape == (2, 12, 2, 4, 4)
    # latent frame 1 holds frames 4..7 (non-causal groups of 4), channel-major
    torch.testing.assert_close(y[:, :3 * 4].reshape(2, 3, 4, 2, 4, 4)[:, :, :, 1], x[:, :, 4:8])
    torch.testing.assert_close(time_unpatchify(y, 4), x)
    with pytest.raises(ValueError, match="not divisible"):
        time_patchify(torch.zeros(1, 1, 6, 4, 4), 4)


@pytest.mark.parametrize("name,clip,latent,run", VIDEO_CASES)
def test_video_presets_downsample_time_and_space(name, clip, latent, run):
    device = "cpu" if run else "meta"
    with torch.device(device):
        encoder, prior, decoder = build_stage1_nets(name, clip)
        base = build_base_model(name, encoder.latent_shape, num_classes=10)
    assert encoder.latent_shape == latent
    assert encoder.dims == 3 and decoder.dims == 3
    x = torch.randn(2, *clip, device=device)
    logsnr = torch.zeros(2, device=device)
    z = encoder(x)
    assert z.shape == (2, *latent)
    assert prior(z, logsnr).shape == z.shape
    assert decoder(x, logsnr, z).shape == x.shape
    assert base(z, logsnr, torch.tensor([0, 10], device=device)).shape == z.shape
    if name == "video_paper":
        assert 100e6 < count_parameters(prior) < 250e6 and 200e6 < count_parameters(base) < 600e6


def test_video_preset_rejects_clip_length_not_divisible_by_time_patch():
    with pytest.raises(ValueError, match="time_patch 4"):
        build_stage1_nets("video_tiny", (1, 6, 16, 16))


@pytest.mark.parametrize("std", [0.3, 2.0])
def test_prior_bound_is_exact_for_gaussian_3d_latents(std):
    """L_z through DiffusionPrior on (C, t, h, w) latents = 0.5 log(1 + s^2 e^5) nats per dimension."""
    g = torch.Generator().manual_seed(int(std * 10))
    n, shape = 20_000, (2, 2, 2, 2)  # (C, t, h, w)
    z_clean = std * torch.randn(n, *shape, generator=g)
    prior = DiffusionPrior(gaussian_oracle(0.0, std), -15.0, 5.0)
    terms = prior(LatentPosterior(z_clean, None, 5.0), g)
    per_dim = (terms.diffusion_nats + terms.terminal_nats - terms.noise_credit_nats) / math.prod(shape)
    exact = 0.5 * math.log(1 + std**2 * math.exp(5))
    stderr = per_dim.std().item() / math.sqrt(n)
    assert abs(per_dim.mean().item() - exact) < 4 * stderr + 0.01 * exact, (per_dim.mean().item(), exact)
    # a wrong denoiser gives a strictly larger bound on the same 3-D latents
    wrong = DiffusionPrior(gaussian_oracle(0.0, 3 * std), -15.0, 5.0)(LatentPosterior(z_clean, None, 5.0), g)
    assert ((wrong.diffusion_nats + wrong.terminal_nats) / math.prod(shape)).mean() > exact * 1.02
