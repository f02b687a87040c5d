"""sample.decoder_clip / sample.reconstruction_draws: checked, recorded, and they reach the decoder; the
paper's sampler stays the default and is what the latent study pins."""

import pytest
import torch

from ul_pipeline.config import ConfigError, load_config
from ul_pipeline.diffusion.solvers import SamplerSpec, decoder_sampler
from ul_pipeline.stage1.model import UnifiedLatents


def test_bad_values_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="decoder_clip"):
        load_config("smoke", ["sample.decoder_clip=sometimes"])
    with pytest.raises(ConfigError, match="reconstruction_draws"):
        load_config("smoke", ["sample.reconstruction_draws=two"])
    ul = UnifiedLatents.from_config(load_config("smoke")).eval()
    with pytest.raises(ValueError, match="sample.reconstruction_draws must be >= 1"):
        ul.reconstruct(torch.zeros(1, *ul.image_shape), 2, draws=0)


def test_keys_make_the_spec():
    assert decoder_sampler(load_config("smoke", ["sample.decoder_clip=false"]).sample) == SamplerSpec(clip=False)
    assert decoder_sampler(load_config("smoke").sample).is_paper


def test_the_latent_study_keeps_the_paper_sampler():
    """Its committed points were evaluated with the paper's decoder sampler; the study config pins it."""
    cfg = load_config("latent_study")
    assert decoder_sampler(cfg.sample).is_paper and cfg.sample.reconstruction_draws == 1


def test_the_new_keys_at_their_defaults_leave_a_result_identity_unchanged():
    """Committed results (the latent study) stay current: at the paper's values the keys are not part of
    config_sha256; any other value is."""
    from ul_pipeline.config import to_dict
    from ul_pipeline.evaluation.results import result_config

    def ident(*overrides):
        return result_config(to_dict(load_config("latent_study", list(overrides))))

    old = ident()
    assert "decoder_clip" not in old["sample"] and "reconstruction_draws" not in old["sample"]
    assert ident("sample.decoder_clip=false") != old and ident("sample.reconstruction_draws=4") != old


def test_the_spec_reaches_the_decoder():
    torch.manual_seed(0)
    ul = UnifiedLatents.from_config(load_config("smoke")).eval()
    z0 = torch.randn(2, *ul.latent_shape)

    def decode(spec):
        return ul.decode(z0, 4, generator=torch.Generator().manual_seed(1), sampler=spec)

    assert torch.equal(decode(None), decode(SamplerSpec()))
    assert not torch.equal(decode(None), decode(SamplerSpec("dpm2m", "logsnr")))
    assert torch.equal(decode(SamplerSpec("dpm2m", "logsnr")), decode(SamplerSpec("dpm2m", "logsnr")))
    assert decode(SamplerSpec(clip=False)).abs().max() <= 1.0  # the image is clamped, only the steps are not


def test_reconstruction_draws_average_decoder_samples_of_one_z0():
    torch.manual_seed(0)
    ul = UnifiedLatents.from_config(load_config("smoke")).eval()
    x = torch.rand(2, *ul.image_shape) * 2 - 1
    g = torch.Generator().manual_seed(3)
    z0 = ul.posterior(x).sample_z0(g)
    draws = [ul.decode(z0, 3, generator=g) for _ in range(3)]
    mean = ul.reconstruct(x, 3, generator=torch.Generator().manual_seed(3), draws=3)
    torch.testing.assert_close(mean, sum(draws) / 3)
    one = ul.reconstruct(x, 3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(one, draws[0])


def test_the_guidance_interval_is_checked_and_joins_a_result_identity_only_when_set():
    from ul_pipeline.config import to_dict
    from ul_pipeline.evaluation.results import result_config

    for bad in ("[2.0,-3.0]", "[1.0]", "[1.0,2.0,3.0]"):
        with pytest.raises(ConfigError, match="sample.guidance_interval"):
            load_config("smoke", [f"sample.guidance_interval={bad}"])
    assert list(load_config("smoke", ["sample.guidance_interval=[-3,5]"]).sample.guidance_interval) == [-3.0, 5.0]

    def ident(*overrides):
        return result_config(to_dict(load_config("latent_study", list(overrides))))

    assert "guidance_interval" not in ident()["sample"]
    assert ident("sample.guidance_interval=[-3,5]") != ident()
