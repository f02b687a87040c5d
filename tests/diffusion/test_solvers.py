"""The decoder's sampler choices (ul_pipeline/diffusion/solvers.py) against closed forms."""

import math

import pytest
import torch

from tests.oracles import gaussian_oracle
from ul_pipeline.diffusion import Schedule, alpha_sigma, ancestral_sample
from ul_pipeline.diffusion.solvers import SamplerSpec, logsnr_grid, sample_clean, t_of_logsnr

SCHED = Schedule(-10.0, 8.0, shift=1.0)


def _clean_moments(mu: float, s: float, logsnr_end: float) -> tuple[float, float]:
    """x_hat = E[x | z] at logsnr_end with z ~ N(alpha mu, alpha^2 s^2 + sigma^2) exactly: its mean and variance."""
    alpha, sigma = alpha_sigma(torch.tensor(logsnr_end, dtype=torch.float64))
    a2s2 = (alpha**2 * s**2).item()
    return mu, s**2 * a2s2 / (a2s2 + sigma.item() ** 2)


@pytest.mark.parametrize("spec,steps", [(SamplerSpec("dpm2m", "t"), 32), (SamplerSpec("dpm2m", "logsnr"), 32),
                                        (SamplerSpec("dpm2m", "logsnr", 3.0), 24)])
def test_deterministic_sampler_recovers_the_gaussian_data_mean_and_variance(spec, steps):
    """With the exact denoiser of x ~ N(mu, s^2), the returned x_hat has the closed-form mean and variance
    (s^2 shrunk by alpha^2 s^2 / (alpha^2 s^2 + sigma^2) at the grid's end, the posterior mean's gain).
    """
    mu, s = 0.3, 0.5
    g = torch.Generator().manual_seed(3)
    x = sample_clean(gaussian_oracle(mu, s), (4000, 4), SCHED, steps, spec, eta=0.0, generator=g)
    end = SCHED.logsnr_max if spec.logsnr_end is None else spec.logsnr_end
    exp_mean, exp_var = _clean_moments(mu, s, end)
    n = x.numel()
    assert abs(x.mean().item() - exp_mean) < 4 * math.sqrt(exp_var / n)
    assert x.var().item() == pytest.approx(exp_var, rel=0.04)


def test_dpm2m_is_deterministic_and_exact_where_the_first_order_step_is_not():
    """Same noise -> same images; with few steps the second-order solver lands nearer the exact ODE
    solution (its many-step limit) than DDIM does, on the same grid."""
    mu, s = 0.3, 0.5
    oracle = gaussian_oracle(mu, s)

    def run(spec, steps, eta=0.0):
        return sample_clean(oracle, (256, 4), SCHED, steps, spec, eta=eta, generator=torch.Generator().manual_seed(5))

    exact = run(SamplerSpec("dpm2m", "logsnr"), 1000)
    torch.testing.assert_close(run(SamplerSpec("dpm2m", "logsnr"), 12), run(SamplerSpec("dpm2m", "logsnr"), 12))
    err_2m = (run(SamplerSpec("dpm2m", "logsnr"), 12) - exact).abs().max().item()
    err_ddim = (run(SamplerSpec("ancestral", "logsnr"), 12) - exact).abs().max().item()
    assert err_2m < 0.5 * err_ddim


def test_paper_spec_is_ancestral_sample_bit_for_bit():
    """SamplerSpec() is the paper's sampler: identical numbers to ancestral_sample(final='clean')."""
    oracle = gaussian_oracle(0.2, 0.6)
    for eta in (1.0, 0.0):
        a = ancestral_sample(oracle, (64, 3), SCHED, 16, final="clean", clip_x=1.0, eta=eta,
                             generator=torch.Generator().manual_seed(7))
        b = sample_clean(oracle, (64, 3), SCHED, 16, SamplerSpec(), clip_x=1.0, eta=eta,
                         generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b)
    assert SamplerSpec().is_paper and not SamplerSpec(grid="logsnr").is_paper


def test_grids():
    paper = SCHED.logsnr(torch.linspace(1.0, 0.0, 17, dtype=torch.float64)).float()
    assert torch.equal(logsnr_grid(SCHED, 16), paper)
    uniform = logsnr_grid(SCHED, 16, "logsnr")
    assert uniform[0].item() == pytest.approx(SCHED.logsnr_min) and uniform[-1].item() == pytest.approx(SCHED.logsnr_max)
    torch.testing.assert_close(uniform.diff(), torch.full((16,), 18.0 / 16))
    ended = logsnr_grid(SCHED, 16, "t", logsnr_end=4.0)
    assert ended[-1].item() == 4.0 and bool((ended.diff() > 0).all())
    for lam in (-9.0, 0.0, 4.0, 7.5):
        assert SCHED.logsnr(torch.tensor(t_of_logsnr(SCHED, lam), dtype=torch.float64)).item() == pytest.approx(lam)
    with pytest.raises(ValueError, match="logsnr_end"):
        logsnr_grid(SCHED, 16, "logsnr", logsnr_end=9.0)
    with pytest.raises(ValueError, match="unknown solver"):
        SamplerSpec("heun")
    with pytest.raises(ValueError, match="unknown grid"):
        SamplerSpec(grid="karras")
