"""Closed-form checks of the diffusion math: schedules, weighting, parametrisation, ELBO, sampler."""

import math

import pytest
import torch

from tests.oracles import gaussian_oracle, mixture_oracle
from ul_pipeline.diffusion import (
    Schedule, alpha_sigma, ancestral_sample, ancestral_step, classifier_free_guidance, eps_from_v, resolution_shift,
    sample_time, sigmoid_weight, terminal_kl_nats, v_target, x_from_v,
)
from ul_pipeline.stage1 import prior_terms


@pytest.mark.parametrize("shift", [0.0, resolution_shift(32), resolution_shift(512)])
def test_schedule_end_points_monotone_and_derivative(shift):
    sched = Schedule(-15.0, 5.0, shift)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    lam = sched.logsnr(t)
    assert lam[0].item() == pytest.approx(5.0, abs=1e-9)
    assert lam[-1].item() == pytest.approx(-15.0, abs=1e-9)
    assert torch.all(lam[1:] < lam[:-1])  # lambda decreases with t
    tt = torch.rand(64, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(sched.logsnr(tt).sum(), tt)
    torch.testing.assert_close(sched.neg_dlogsnr_dt(tt.detach()), -grad)
    assert torch.all(sched.neg_dlogsnr_dt(t) > 0)


def test_shifted_schedule_moves_the_middle_not_the_ends():
    plain, shifted = Schedule(-10, 10), Schedule(-10, 10, resolution_shift(32))
    assert resolution_shift(32) == pytest.approx(2 * math.log(2))
    mid = torch.tensor([0.5], dtype=torch.float64)
    assert shifted.logsnr(mid).item() > plain.logsnr(mid).item()  # small images: more signal


def test_encoder_noise_constants_at_logsnr_5():
    alpha, sigma = alpha_sigma(torch.tensor(5.0, dtype=torch.float64))
    assert alpha.item() == pytest.approx(0.99665, abs=1e-5)
    assert sigma.item() == pytest.approx(0.08181, abs=1e-5)
    assert (alpha**2 + sigma**2).item() == pytest.approx(1.0)


def test_sigmoid_weighting_discounts_low_noise():
    lam = torch.linspace(-10, 10, 21)
    w = sigmoid_weight(lam, bias=1.0)
    assert torch.all(w[1:] < w[:-1])  # high lambda (low noise) weighs less
    assert sigmoid_weight(torch.tensor(1.0), 1.0).item() == pytest.approx(0.5)


def test_v_parametrisation_round_trip():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    alpha, sigma = alpha_sigma(torch.randn(8, 1, generator=g) * 4)
    x_t = alpha * x + sigma * eps
    v = v_target(x, eps, alpha, sigma)
    torch.testing.assert_close(x_from_v(x_t, v, alpha, sigma), x)
    torch.testing.assert_close(eps_from_v(x_t, v, alpha, sigma), eps)


def test_terminal_kl_matches_torch_distributions():
    z = torch.randn(5, 2, 3, 3)
    lam1 = -3.0
    alpha, sigma = alpha_sigma(torch.tensor(lam1))
    q = torch.distributions.Normal(alpha * z, sigma)
    p = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(terminal_kl_nats(z, lam1), expected)


def test_antithetic_time_is_stratified_and_uniform():
    g = torch.Generator().manual_seed(1)
    t = sample_time(16, generator=g)
    gaps = torch.diff(torch.sort(t).values)
    torch.testing.assert_close(gaps, torch.full_like(gaps, 1 / 16))
    means = torch.stack([sample_time(7, generator=g).mean() for _ in range(2000)])
    assert means.mean().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("std", [0.1, 1.0, 4.0])
def test_prior_elbo_is_exact_for_gaussian_latents(std):
    """Must-show 1: E[L_z] = 0.5 log(1 + s^2 e^5) nats per dimension with the optimal denoiser."""
    g = torch.Generator().manual_seed(int(std * 100))
    n, dims = 40_000, (2, 2, 2)
    z_clean = std * torch.randn(n, *dims, generator=g)
    sched = Schedule(-15.0, 5.0)
    diffusion, terminal = prior_terms(gaussian_oracle(0.0, std), z_clean, sched, generator=g)
    per_dim = (diffusion + terminal) / 8
    exact = 0.5 * math.log(1 + std**2 * math.exp(5))
    stderr = per_dim.std().item() / math.sqrt(n)
    assert abs(per_dim.mean().item() - exact) < 4 * stderr, (per_dim.mean().item(), exact, stderr)
    assert abs(per_dim.mean().item() - exact) < 0.02 * exact


def test_prior_elbo_with_a_wrong_denoiser_is_a_strict_upper_bound():
    g = torch.Generator().manual_seed(3)
    z_clean = torch.randn(20_000, 4, generator=g)
    sched = Schedule(-15.0, 5.0)
    diffusion, terminal = prior_terms(gaussian_oracle(0.0, 2.0), z_clean, sched, generator=g)
    exact = 4 * 0.5 * math.log(1 + math.exp(5))
    assert (diffusion + terminal).mean().item() > exact * 1.02


def test_ancestral_sampler_reproduces_a_gaussian():
    """Must-show 2: oracle-driven ancestral sampling to lambda=5 gives z0 ~ N(alpha0 mu, alpha0^2 s^2 + sigma0^2)."""
    mu, s = 0.5, 0.7
    g = torch.Generator().manual_seed(0)
    z0 = ancestral_sample(gaussian_oracle(mu, s), (4000, 4), Schedule(-15.0, 5.0), steps=200, generator=g)
    alpha0, sigma0 = alpha_sigma(torch.tensor(5.0))
    n = z0.numel()
    exp_mean, exp_var = alpha0.item() * mu, (alpha0**2 * s**2 + sigma0**2).item()
    assert abs(z0.mean().item() - exp_mean) < 4 * math.sqrt(exp_var / n)
    assert z0.var().item() == pytest.approx(exp_var, rel=0.04)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_family_keeps_the_gaussian_marginal(eta):
    """Every eta gives the same marginals with an exact denoiser: z0 ~ N(alpha0 mu, alpha0^2 s^2 + sigma0^2)."""
    mu, s = 0.5, 0.7
    g = torch.Generator().manual_seed(2)
    z0 = ancestral_sample(gaussian_oracle(mu, s), (4000, 4), Schedule(-15.0, 5.0), steps=100, eta=eta, generator=g)
    alpha0, sigma0 = alpha_sigma(torch.tensor(5.0))
    exp_mean, exp_var = alpha0.item() * mu, (alpha0**2 * s**2 + sigma0**2).item()
    assert abs(z0.mean().item() - exp_mean) < 4 * math.sqrt(exp_var / z0.numel())
    assert z0.var().item() == pytest.approx(exp_var, rel=0.04)


def test_ddim_step_at_eta_one_is_the_ancestral_step_and_eta_zero_is_deterministic():
    z_t, x_hat, noise = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    lt, ls = torch.tensor(-1.0), torch.tensor(2.0)
    general = ancestral_step(z_t, x_hat, lt, ls, noise, eta=1.0 - 1e-12)
    torch.testing.assert_close(general, ancestral_step(z_t, x_hat, lt, ls, noise), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ancestral_step(z_t, x_hat, lt, ls, noise, eta=0.0),
                               ancestral_step(z_t, x_hat, lt, ls, torch.zeros_like(noise), eta=0.0))
    a_t, s_t = alpha_sigma(lt)
    a_s, s_s = alpha_sigma(ls)  # DDIM: x_hat and eps_hat carried to level s unchanged
    torch.testing.assert_close(ancestral_step(z_t, x_hat, lt, ls, noise, eta=0.0),
                               a_s * x_hat + s_s * (z_t - a_t * x_hat) / s_t)


def test_ancestral_sampler_reproduces_a_gaussian_mixture():
    means, s, w = [-2.0, 2.0], 0.3, [0.3, 0.7]
    g = torch.Generator().manual_seed(1)
    x = ancestral_sample(mixture_oracle(means, s, w), (8000, 2), Schedule(-15.0, 8.0), steps=250,
                         final="clean", generator=g)
    frac_right = (x > 0).float().mean().item()
    assert frac_right == pytest.approx(0.7, abs=0.02)
    right, left = x[x > 0], x[x < 0]
    assert right.mean().item() == pytest.approx(2.0, abs=0.03)
    assert left.mean().item() == pytest.approx(-2.0, abs=0.05)
    assert right.std().item() == pytest.approx(0.3, rel=0.08)


def test_ancestral_sampler_single_step_matches_the_formula():
    """One step from lambda_min: the output mean is alpha_s (z(1-c)/alpha_t + c x_hat) exactly."""
    sched = Schedule(-2.0, 1.0)
    x_const = 0.25

    def oracle(z, logsnr):  # always predicts x = 0.25
        alpha, sigma = alpha_sigma(logsnr.reshape(-1, 1))
        return (alpha * ((z - alpha * x_const) / sigma) - sigma * x_const)

    g = torch.Generator().manual_seed(0)
    z = ancestral_sample(oracle, (200_000, 1), sched, steps=1, generator=g)
    a_t, _ = alpha_sigma(torch.tensor(-2.0))
    a_s, s_s = alpha_sigma(torch.tensor(1.0))
    c = 1 - math.exp(-3.0)
    exp_mean = a_s.item() * c * x_const  # E[z_t] = 0
    exp_var = (a_s.item() * (1 - c) / a_t.item()) ** 2 + s_s.item() ** 2 * c
    assert z.mean().item() == pytest.approx(exp_mean, abs=4 * math.sqrt(exp_var / 200_000))
    assert z.var().item() == pytest.approx(exp_var, rel=0.01)


def test_classifier_free_guidance_extrapolates_in_v():
    def model(z, logsnr, labels):
        return z * 0 + labels.float().reshape(-1, 1)  # v equals the label id

    labels = torch.tensor([3, 5])
    z, lam = torch.zeros(2, 1), torch.zeros(2)
    torch.testing.assert_close(classifier_free_guidance(model, labels, 10, 0.0)(z, lam), torch.tensor([[3.0], [5.0]]))
    guided = classifier_free_guidance(model, labels, 10, 2.0)(z, lam)
    torch.testing.assert_close(guided, 3 * torch.tensor([[3.0], [5.0]]) - 2 * 10.0)


def test_a_guidance_interval_guides_inside_and_is_conditional_outside():
    calls = []

    def model(z, logsnr, labels):
        calls.append(len(labels))
        return z * 0 + labels.float().reshape(-1, 1)

    labels, z = torch.tensor([3, 5]), torch.zeros(2, 1)
    cond, guided = torch.tensor([[3.0], [5.0]]), 3 * torch.tensor([[3.0], [5.0]]) - 2 * 10.0
    denoise = classifier_free_guidance(model, labels, 10, 2.0, interval=(-3.0, 2.0))
    for lam, want, batch in ((-3.0, guided, 4), (2.0, guided, 4), (0.5, guided, 4), (-3.01, cond, 2), (2.01, cond, 2)):
        calls.clear()
        torch.testing.assert_close(denoise(z, torch.full((2,), lam)), want)
        assert calls == [batch]  # outside the interval the null branch is not even evaluated
    everywhere = classifier_free_guidance(model, labels, 10, 2.0, interval=None)
    torch.testing.assert_close(everywhere(z, torch.full((2,), 9.0)), guided)
    with pytest.raises(ValueError, match="guidance interval"):
        classifier_free_guidance(model, labels, 10, 2.0, interval=(2.0, -3.0))
