"""A rate controller: beta (the weight on L_z) steered during training so the latent's bits track a target.

Rate-matched baselines need a KL weight that lands on a given bitrate. Instead of calibrating it by
repeated runs, the weight follows the rate error, one small multiplicative step per training step
(dual ascent on the constraint rate = target, as in GECO, Rezende & Viola 2018):

    log beta <- log beta + gain * clip((rate - target) / target, -1, 1)

A rate above the target makes latent bits dearer, one below makes them cheaper. `rate` is the
batch's bits/pixel averaged over ranks, so every rank holds the same beta. The state (log beta,
steps) lives in buffers: checkpoints carry it and a resumed run continues exactly. It holds still
while the encoder does (`hold_steps`), since the rate cannot move then.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ul_pipeline import distributed


LOG_BETA_BOUND = math.log(1e4)  # beta stays in [1e-4, 1e4]: an unreachable target cannot blow the loss up


class RateController(nn.Module):
    """Multiplicative control of beta toward `target_bits_per_pixel` (see the module docstring)."""

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
