"""The pi rate law on real training: the smoke Stage 1 as the rate-matched normal-prior baseline, target 0.3."""

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.data import load_fashion_mnist
from ul_pipeline.stage1.training import train_stage1

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TARGET, WARMUP = 0.3, 1280  # bits/pixel; samples (40 steps at batch 32): the first approach to the target


def batch_rates(law: str, samples: int, tmp_path) -> list[tuple[int, float]]:
    images = torch.nn.functional.pad(torch.from_numpy(load_fashion_mnist("train")[0][:500]).unsqueeze(1),
                                     (2, 2, 2, 2))
    cfg = load_config("smoke", ["stage1.prior=normal", "stage1.encoder_noise=learned", "stage2.standardize=true",
                                f"stage1.target_bits_per_pixel={TARGET}", f"stage1.rate_control={law}",
                                "stage1.rate_gain=0.05", f"stage1.train.total_samples={samples}",
                                "stage1.train.log_every_samples=32", f"stage1.train.checkpoint_every_samples={samples}"])
    history = train_stage1(cfg, images, tmp_path).history
    return [(h["samples_seen"], h["bits_per_pixel"]) for h in history]


@pytest.mark.slow
def test_pi_law_never_leaves_half_to_one_and_a_half_targets_after_warmup(tmp_path):
    """The integral law on this run falls to 0.0048 bits/pixel (benchmarks/results/rate_trace/integral.json)."""
    after = [r for n, r in batch_rates("pi", 4800, tmp_path) if n > WARMUP]
    assert 0.5 * TARGET <= min(after) and max(after) <= 1.5 * TARGET, (min(after), max(after))
