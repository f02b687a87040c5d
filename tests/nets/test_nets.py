"""Shapes, conditioning and sizes of the UL networks (tiny/small on CPU, paper on the meta device)."""

import pytest
import torch
import torch.nn.functional as F

from ul_pipeline.nets import (PRESETS, BaseViT, DecoderUViT, Encoder, LogSNREmbedding, PriorViT,
                              build_base_model, build_stage1_nets, count_flops, count_parameters,
                              get_preset, patchify, unpatchify)
from ul_pipeline.nets.layers import Attention
from ul_pipeline.nets.presets import _flops_on, size_table


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small networks: one thread


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb_zeros(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Give every all-zero (zero-initialised) parameter random values so outputs are non-trivial."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.normal_(0.0, scale)


def test_patchify_round_trip_2d_matches_pixel_unshuffle():
    x = torch.randn(2, 3, 8, 12)
    y = patchify(x, 2)
    assert y.shape == (2, 12, 4, 6)
    assert torch.equal(y, F.pixel_unshuffle(x, 2))
    assert torch.equal(unpatchify(y, 2), x)


def test_patchify_3d_leaves_time_axis_alone():
    x = torch.randn(2, 3, 5, 8, 8)  # (B, C, T, H, W)
    y = patchify(x, 2)
    assert y.shape == (2, 12, 5, 4, 4)
    assert torch.equal(y[:, :, 3], patchify(x[:, :, 3], 2))  # each frame patched on its own
    assert torch.equal(unpatchify(y, 2), x)
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 1, 7, 8), 2)


def test_logsnr_embedding_distinguishes_levels():
    emb = LogSNREmbedding(32)
    out = emb(torch.tensor([-20.0, -5.0, 0.0, 5.0, 20.0]))
    assert out.shape == (5, 32)
    assert torch.cdist(out, out).add(torch.eye(5)).min() > 1e-4  # all levels embed differently
    assert torch.allclose(emb(torch.tensor(5.0)), out[3:4])  # a scalar lambda is a batch of one


@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize("channels", [1, 3])
def test_stage1_shapes(name, channels):
    image_shape = (channels, 32, 32)
    encoder, prior, decoder = build_stage1_nets(name, image_shape)
    assert encoder.latent_shape == (PRESETS[name].latent_channels, 8, 8)
    x, logsnr = torch.randn(2, *image_shape), torch.tensor([-3.0, 4.0])
    z = encoder(x)
    assert z.shape == (2, *encoder.latent_shape)
    assert prior(z, logsnr).shape == z.shape
    assert decoder(x, logsnr, z).shape == x.shape


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_base_model_shapes(name):
    base = build_base_model(name, (4, 8, 8), num_classes=10)
    z = torch.randn(3, 4, 8, 8)
    assert base(z, torch.zeros(3), torch.tensor([0, 9, 10])).shape == z.shape


def test_latent_channels_override():
    encoder, prior, decoder = build_stage1_nets("tiny", (1, 16, 16), latent_channels=6)
    assert encoder.latent_shape == (6, 4, 4)
    z = encoder(torch.randn(1, 1, 16, 16))
    assert prior(z, torch.zeros(1)).shape == z.shape


def test_zero_init_outputs_are_zero():
    encoder, prior, decoder = build_stage1_nets("tiny", (1, 16, 16))
    x = torch.randn(2, 1, 16, 16)
    z = encoder(x)
    assert z.abs().sum() > 0  # the encoder is not zero-initialised
    assert torch.equal(decoder(x, torch.zeros(2), z), torch.zeros_like(x))
    assert torch.equal(prior(z, torch.zeros(2)), torch.zeros_like(z))


def test_decoder_depends_on_z0_and_logsnr():
    _, _, decoder = build_stage1_nets("tiny", (3, 16, 16))
    perturb_zeros(decoder)
    decoder.eval()
    x, z0, logsnr = torch.randn(2, 3, 16, 16), torch.randn(2, 4, 4, 4), torch.tensor([0.0, 2.0])
    with torch.no_grad():
        v = decoder(x, logsnr, z0)
        assert not torch.allclose(v, decoder(x, logsnr, z0 + torch.randn_like(z0)), atol=1e-5)
        assert not torch.allclose(v, decoder(x, logsnr + 3.0, z0), atol=1e-5)
        # conditioning is per example: changing example 1's z0 leaves example 0 untouched
        z0b = z0.clone()
        z0b[1] += 1.0
        assert torch.allclose(v[0], decoder(x, logsnr, z0b)[0], atol=1e-6)


def test_stage1_train_step_reaches_the_encoder():
    """Two optimiser steps on a v-MSE of both prior and decoder; the 2nd step's grads reach E."""
    encoder, prior, decoder = build_stage1_nets("tiny", (1, 16, 16))
    params = [*encoder.parameters(), *prior.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    x, logsnr = torch.randn(4, 1, 16, 16), torch.randn(4) * 5
    for _ in range(2):
        z = encoder(x)
        loss = (prior(z + torch.randn_like(z), logsnr) - z).square().mean() \
            + (decoder(x + torch.randn_like(x), logsnr, z) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    grad = encoder.conv_in.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert torch.isfinite(loss)


def test_base_model_depends_on_labels_and_null_label_works():
    base = build_base_model("tiny", (4, 8, 8), num_classes=10)
    perturb_zeros(base)
    base.eval()
    z, logsnr = torch.randn(1, 4, 8, 8).expand(3, -1, -1, -1), torch.zeros(3)
    labels = torch.tensor([0, 1, base.null_label])
    assert base.null_label == 10
    with torch.no_grad():
        v = base(z, logsnr, labels)
    assert torch.isfinite(v).all()
    assert not torch.allclose(v[0], v[1], atol=1e-5)
    assert not torch.allclose(v[0], v[2], atol=1e-5)
    with pytest.raises(IndexError):
        base(z[:1], logsnr[:1], torch.tensor([11]))


def test_video_shapes():
    image_shape = (3, 4, 16, 16)  # (C, T, H, W): time axis is neither patched nor downsampled
    encoder, prior, decoder = build_stage1_nets("tiny", image_shape)
    assert encoder.dims == 3 and isinstance(encoder.conv_in, torch.nn.Conv3d)
    assert encoder.latent_shape == (4, 4, 4, 4)
    x, logsnr = torch.randn(2, *image_shape), torch.zeros(2)
    z = encoder(x)
    assert z.shape == (2, *encoder.latent_shape)
    assert prior(z, logsnr).shape == z.shape
    assert decoder(x, logsnr, z).shape == x.shape
    base = build_base_model("tiny", encoder.latent_shape, num_classes=3)
    assert base(z, logsnr, torch.tensor([0, 3])).shape == z.shape


def test_decoder_rejects_incompatible_shapes():
    kw = dict(channels=[8, 16], blocks=[1, 1], width=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="power-of-two"):
        DecoderUViT((1, 48, 48), (4, 8, 8), **kw)  # 24 / 8 = 3
    with pytest.raises(ValueError, match="needs 3 downsamplings"):
        DecoderUViT((1, 64, 64), (4, 4, 4), **kw)  # 32 / 4 = 2^3 > 2 stages
    with pytest.raises(ValueError, match="time"):
        DecoderUViT((1, 4, 16, 16), (4, 2, 4, 4), **kw)


def test_encoder_rejects_indivisible_image():
    with pytest.raises(ValueError, match="divisible"):
        Encoder((1, 30, 30), 4, channels=[8, 16], blocks=[1, 1])


def test_get_preset_unknown_names_it():
    with pytest.raises(KeyError, match="nope") as info:
        get_preset("nope")
    assert "tiny" in str(info.value) and "paper" in str(info.value)
    assert get_preset("small") is PRESETS["small"]


def test_paper_preset_sizes():
    with torch.device("meta"):
        encoder, prior, decoder = build_stage1_nets("paper", (3, 512, 512))
        base = build_base_model("paper", encoder.latent_shape, num_classes=1000)
    assert encoder.latent_shape == (32, 32, 32)
    assert decoder.n_down == 3
    block = 12 * 1024**2  # attention + MLP weights of one width-1024 block (~12.6M)
    adaln = 6 * 1024**2  # its adaLN modulation
    assert 8 * block < count_parameters(prior) < 8 * (block + adaln) * 1.1
    assert 8 * block < count_parameters(decoder.mid) < 8 * (block + adaln) * 1.1
    assert count_parameters(decoder) > count_parameters(decoder.mid)
    assert 10e6 < count_parameters(encoder) < 60e6
    assert 200e6 < count_parameters(base) < 600e6


def test_count_flops_matches_closed_form_attention():
    b, n, d = 2, 16, 32
    attn = Attention(d, heads=4)
    expected = 2 * b * n * (3 * d * d + d * d) + 2 * 2 * b * n * n * d  # projections + QK^T, AV
    assert count_flops(attn, torch.randn(b, n, d)) == expected
    assert _flops_on(attn, [torch.randn(b, n, d)], torch.device("cpu")) == expected  # fallback
    assert next(attn.parameters()).device.type == "cpu"  # counting leaves the module alone


def test_size_table_lists_every_network():
    table = size_table([("tiny", (1, 16, 16), 10)])
    for net in ("encoder", "prior", "decoder", "base"):
        assert f"| {net} |" in table


def test_direct_constructors_agree_with_presets():
    p = PRESETS["tiny"]
    encoder = Encoder((1, 16, 16), p.latent_channels, **p.encoder)
    prior = PriorViT(encoder.latent_shape, **p.prior)
    base = BaseViT(encoder.latent_shape, num_classes=2, **p.base)
    ref_e, ref_p, _ = build_stage1_nets("tiny", (1, 16, 16))
    assert count_parameters(prior) == count_parameters(ref_p)
    assert count_parameters(encoder) == count_parameters(ref_e)
    assert count_parameters(base) > 0
