"""Rate controllers: beta (the weight on L_z) steered during training so the latent's bits track a target.

Rate-matched baselines need a KL weight that lands on a given bitrate. Instead of calibrating it by
repeated runs, the weight follows the rate error, one small multiplicative step per training step.
Two laws (config `stage1.rate_control`), one interface (`beta`, `update(bits_per_pixel)`):

- `integral` (`RateController`, the law the committed study ran with): dual ascent on the
  constraint rate = target, as in GECO (Rezende & Viola 2018),
      log beta <- log beta + gain * clip((rate - target) / target, -1, 1).
  The rate answers beta only as fast as the encoder learns, so while it lags the integral keeps
  winding up: on the smoke data (target 0.3, benchmarks/rate_trace.py) the batch rate falls to
  0.0048 at 6,700 samples (the encoder collapses), overshoots to 0.49 at 16,800 and is still
  below the target (0.25) at 28,000.
- `pi` (`PiRateController`): proportional-integral control on the *predicted* log error. Two
  exponential averages of log(rate / target) (5 and 20 steps) give its level and its trend; the
  error is the level `lookahead_steps` (80) ahead on that trend, clipped to [-3, 3], and
      I <- I + gain * error,   log beta = I + proportional * error   (proportional 2).
  A rate already falling fast toward the target lowers beta before it gets there (the lag of the
  encoder is what made the integral law overshoot into collapse), and a rate coming back from
  below raises it before the crossing; the log error makes a collapsed rate (0.007 of 0.3) an
  error of -3, not -1, so beta comes down in tens of steps. On the smoke data (target 0.3, gain
  0.05) the batch rate stays within 0.233-0.361 from 1,280 samples to the run's end at 16,000.

`rate` is the batch's bits/pixel averaged over ranks, so every rank holds the same beta. The state
lives in buffers: checkpoints carry it and a resumed run continues exactly. Both hold still while
the encoder does (`hold_steps`), since the rate cannot move then.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ul_pipeline import distributed


LOG_BETA_BOUND = math.log(1e4)  # beta stays in [1e-4, 1e4]: an unreachable target cannot blow the loss up
RATE_FLOOR = 1e-6  # bits/pixel: a collapsed encoder's rate, kept off log(0)


class RateController(nn.Module):
    """Integral control of log beta toward `target_bits_per_pixel` (the `integral` law, see the module docstring)."""

    def __init__(self, target_bits_per_pixel: float, gain: float, beta0: float = 1.0, hold_steps: int = 0):
        super().__init__()
        if target_bits_per_pixel <= 0 or gain <= 0 or beta0 <= 0:
            raise ValueError("target_bits_per_pixel, gain and beta0 must be > 0")
        self.target, self.gain, self.hold_steps = float(target_bits_per_pixel), float(gain), int(hold_steps)
        self.register_buffer("log_beta", torch.tensor(math.log(beta0), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    @property
    def beta(self) -> float:
        """The weight on L_z for the current step."""
        return math.exp(float(self.log_beta))

    @torch.no_grad()
    def update(self, bits_per_pixel: float) -> float:
        """One control step from this batch's rate (mean over ranks); returns the new beta."""
        rate = distributed.mean_over_ranks({"rate": float(bits_per_pixel)})["rate"]
        if int(self.steps) >= self.hold_steps:
            error = max(-1.0, min(1.0, (rate - self.target) / self.target))
            self.log_beta.copy_((self.log_beta + self.gain * error).clamp(-LOG_BETA_BOUND, LOG_BETA_BOUND))
        self.steps += 1
        return self.beta


class PiRateController(RateController):
    """Proportional-integral control of log beta on the predicted log rate error (the `pi` law)."""

    def __init__(self, target_bits_per_pixel: float, gain: float, beta0: float = 1.0, hold_steps: int = 0,
                 proportional: float = 2.0, lookahead_steps: float = 80.0, fast_steps: float = 5.0,
                 slow_steps: float = 20.0, error_bound: float = 3.0):
        super().__init__(target_bits_per_pixel, gain, beta0, hold_steps)
        if proportional < 0 or lookahead_steps < 0 or not 1 <= fast_steps < slow_steps or error_bound <= 0:
            raise ValueError("need proportional >= 0, lookahead_steps >= 0, 1 <= fast_steps < slow_steps, error_bound > 0")
        self.proportional, self.lookahead = float(proportional), float(lookahead_steps)
        self.fast_steps, self.slow_steps, self.error_bound = float(fast_steps), float(slow_steps), float(error_bound)
        self.register_buffer("integral", torch.tensor(math.log(beta0), dtype=torch.float64))
        self.register_buffer("fast", torch.zeros((), dtype=torch.float64))  # EMAs of log(rate / target)
        self.register_buffer("slow", torch.zeros((), dtype=torch.float64))

    def error(self) -> float:
        """The smoothed log(rate / target) `lookahead` steps ahead on its current trend, clipped."""
        fast, slow = float(self.fast), float(self.slow)
        trend = (fast - slow) / (self.slow_steps - self.fast_steps)  # two EMAs of a ramp lag by the slope x taus
        return max(-self.error_bound, min(self.error_bound, fast + self.lookahead * trend))

    @torch.no_grad()
    def update(self, bits_per_pixel: float) -> float:
        rate = distributed.mean_over_ranks({"rate": float(bits_per_pixel)})["rate"]
        step = int(self.steps)
        self.steps += 1
        if step < self.hold_steps:
            return self.beta
        raw = math.log(max(rate, RATE_FLOOR) / self.target)
        if step == self.hold_steps:
            self.fast.fill_(raw)
            self.slow.fill_(raw)
        self.fast += (raw - self.fast) / self.fast_steps
        self.slow += (raw - self.slow) / self.slow_steps
        error = self.error()
        self.integral.copy_((self.integral + self.gain * error).clamp(-LOG_BETA_BOUND, LOG_BETA_BOUND))
        self.log_beta.copy_((self.integral + self.proportional * error).clamp(-LOG_BETA_BOUND, LOG_BETA_BOUND))
        return self.beta


RATE_LAWS = {"integral": RateController, "pi": PiRateController}
