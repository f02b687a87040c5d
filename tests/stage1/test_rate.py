"""The rate controllers steer beta to the KL weight whose rate is the target, and resume exactly; the pi law
without the integral law's collapse-and-overshoot transient."""

import math
import random

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.stage1 import UnifiedLatents
from ul_pipeline.stage1.rate import PiRateController, RateController


def run(controller: RateController, rate_of_beta, steps: int) -> list[float]:
    return [controller.update(rate_of_beta(controller.beta)) for _ in range(steps)]


def test_converges_to_the_beta_whose_rate_is_the_target():
    # a toy rate curve: rate = 0.8 / beta (more weight on L_z, fewer bits); target 0.2 -> beta* = 4
    c = RateController(0.2, gain=0.02, beta0=1.0)
    betas = run(c, lambda beta: 0.8 / beta, 2000)
    assert betas[-1] == pytest.approx(4.0, rel=0.02)
    # and from the other side
    c = RateController(0.2, gain=0.02, beta0=50.0)
    assert run(c, lambda beta: 0.8 / beta, 2000)[-1] == pytest.approx(4.0, rel=0.02)


def test_holds_still_while_the_encoder_does_and_clips_wild_batches():
    c = RateController(0.1, gain=0.05, beta0=1.0, hold_steps=10)
    assert run(c, lambda beta: 100.0, 10) == [1.0] * 10  # held
    c.update(1e6)  # a wild batch moves log beta by at most the gain
    assert math.log(c.beta) == pytest.approx(0.05)


def test_state_travels_in_the_state_dict_so_a_resumed_run_continues_exactly():
    a = RateController(0.3, gain=0.01, beta0=2.0, hold_steps=3)
    run(a, lambda beta: 0.9 / beta, 50)
    b = RateController(0.3, gain=0.01, beta0=2.0, hold_steps=3)
    b.load_state_dict(a.state_dict())
    assert run(a, lambda beta: 0.9 / beta, 20) == run(b, lambda beta: 0.9 / beta, 20)


def test_the_model_uses_the_controlled_beta_and_only_when_asked():
    fixed = UnifiedLatents.from_config(load_config("smoke", ["stage1.prior=normal", "stage1.latent_weight=0.5"]))
    assert fixed.rate is None and "rate.log_beta" not in fixed.state_dict()
    cfg = load_config("smoke", ["stage1.prior=normal", "stage1.latent_weight=0.5", "stage1.target_bits_per_pixel=0.8"])
    model = UnifiedLatents.from_config(cfg)
    assert model.rate.beta == pytest.approx(0.5) and "rate.log_beta" in model.state_dict()
    model.rate.log_beta.fill_(math.log(3.0))
    x = torch.rand(2, *model.image_shape) * 2 - 1
    assert model.loss_terms(x, torch.Generator().manual_seed(0)).latent_weight == pytest.approx(3.0)


def test_beta_stays_bounded_when_the_target_cannot_be_reached():
    c = RateController(0.1, gain=0.05, beta0=1.0)
    run(c, lambda beta: 0.7, 5000)  # a rate floor above the target: beta would grow without end
    assert c.beta == pytest.approx(1e4)


def test_a_target_below_the_normal_priors_floor_with_fixed_noise_is_refused_before_training():
    """KL(N(m, s0^2) || N(0, 1)) >= (s0^2 - log s0^2 - 1) / 2 per dim: 0.72 bits/pixel for 4x8x8 latents at lambda0 = 5."""
    from ul_pipeline.config import ConfigError
    from ul_pipeline.stage1.model import rate_floor_bits_per_pixel

    var0 = 1 / (1 + math.exp(5.0))
    floor = rate_floor_bits_per_pixel("normal", "fixed", 5.0, (4, 8, 8), (1, 32, 32))
    assert floor == pytest.approx(0.5 * (var0 - math.log(var0) - 1) * 256 / math.log(2) / 1024)
    assert floor == pytest.approx(0.7238, abs=1e-4)  # what a run at target 0.335 got stuck at
    assert rate_floor_bits_per_pixel("normal", "learned", 5.0, (4, 8, 8), (1, 32, 32)) == 0.0
    with pytest.raises(ConfigError, match=r"stage1.target_bits_per_pixel': 0.335 is below .* \(0\.7238 bits/pixel"):
        UnifiedLatents.from_config(load_config("smoke", ["stage1.prior=normal", "stage1.target_bits_per_pixel=0.335"]))
    model = UnifiedLatents.from_config(load_config("smoke", ["stage1.prior=normal", "stage1.encoder_noise=learned",
                                                             "stage1.target_bits_per_pixel=0.335"]))
    assert model.rate.target == 0.335


def lagging_rate(controller, steps: int, beta_star: float, tau: float, slope: float = 1.0, r0: float = 0.715,
                 noise: float = 0.05, seed: int = 0) -> list[float]:
    """A toy encoder: the rate relaxes (time constant tau steps) toward 0.3 (beta*/beta)^slope, seen with noise.

    Started at beta = 1 far above beta* with the rate above the target, like the normal-prior baseline on
    the smoke data (rate 0.72 at initialisation, beta* ~ 0.02 for 0.3 bits/pixel)."""
    rng, rate, out = random.Random(seed), r0, []
    for _ in range(steps):
        beta = controller.update(rate * math.exp(rng.gauss(0.0, noise)))
        rate += (min(3.0, 0.3 * (beta_star / beta) ** slope) - rate) / tau
        out.append(rate)
    return out


PLANTS = [(0.015, 30, 1.0), (0.005, 60, 1.0), (0.05, 15, 0.5), (0.015, 100, 1.5)]
WARMUP = 150  # steps: the first approach to the target


@pytest.mark.parametrize("beta_star, tau, slope", PLANTS)
def test_pi_law_keeps_the_rate_within_half_and_one_and_a_half_targets_after_warmup(beta_star, tau, slope):
    rates = lagging_rate(PiRateController(0.3, gain=0.05), 1500, beta_star, tau, slope)
    after = rates[WARMUP:]
    assert 0.5 * 0.3 <= min(after) and max(after) <= 1.5 * 0.3, (min(after), max(after))
    assert sum(rates[-200:]) / 200 == pytest.approx(0.3, rel=0.05)  # and it settles on the target


@pytest.mark.parametrize("beta_star, tau, slope", PLANTS)
def test_integral_law_collapses_the_rate_on_the_same_plants(beta_star, tau, slope):
    """The study's law on the same plants: the transient the pi law removes (the rate below half the target)."""
    rates = lagging_rate(RateController(0.3, gain=0.02), 1500, beta_star, tau, slope)
    assert min(rates[WARMUP:]) < 0.5 * 0.3


def test_pi_state_travels_in_the_state_dict_and_holds_with_the_encoder():
    a = PiRateController(0.3, gain=0.05, beta0=2.0, hold_steps=3)
    assert run(a, lambda beta: 5.0, 3) == [2.0] * 3  # held
    run(a, lambda beta: 0.9 / beta, 50)
    b = PiRateController(0.3, gain=0.05, beta0=2.0, hold_steps=3)
    b.load_state_dict(a.state_dict())
    assert run(a, lambda beta: 0.9 / beta, 20) == run(b, lambda beta: 0.9 / beta, 20)
    assert set(a.state_dict()) == {"log_beta", "steps", "integral", "fast", "slow"}


def test_the_default_law_is_the_committed_studys():
    base = ["stage1.prior=normal", "stage1.encoder_noise=learned", "stage1.target_bits_per_pixel=0.3"]
    model = UnifiedLatents.from_config(load_config("smoke", base))
    assert type(model.rate) is RateController and set(model.rate.state_dict()) == {"log_beta", "steps"}
    pi = UnifiedLatents.from_config(load_config("smoke", base + ["stage1.rate_control=pi"]))
    assert type(pi.rate) is PiRateController
    from ul_pipeline.config import ConfigError
    with pytest.raises(ConfigError, match="stage1.rate_control"):
        load_config("smoke", base + ["stage1.rate_control=pid"])
