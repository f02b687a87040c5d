"""compute.compile changes nothing a checkpoint records: a run resumes from eager into compiled and back and ends
where an eager run ends, up to rounding (slow: torch.compile's cold compile takes minutes on 2 CPU cores).

Compiled code draws its random numbers with inductor's own generator unless `fallback_random` is set: the
training noise then differs from eager's like another seed's (a first run of this test without it ended with
entries 2e-3 apart where they are about 1e-2). The test sets it, so both draw the same numbers and only rounding differs."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config  # noqa: F401 (monkeypatched below)

from ul_pipeline.config import load_config
from ul_pipeline.stage2.training import train_stage2

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
COMMON = ["compute.device=cpu", "compute.precision=fp32", "compute.tensorboard=false",
          "stage2.train.checkpoint_every_samples=64", "stage2.train.batch_size=32"]


def run(tmp, name: str, legs: list[tuple[int, bool]]) -> dict:
    torch.manual_seed(0)
    z, labels = torch.randn(128, 4, 8, 8), torch.arange(128) % 10
    for total, compiled in legs:
        cfg = load_config("smoke", [*COMMON, f"stage2.train.total_samples={total}", f"compute.compile={compiled}"])
        result = train_stage2(cfg, z, labels, tmp / name)
    assert result.state.samples_seen == legs[-1][0]
    assert all(not k.startswith("_orig_mod") for k in result.model.state_dict())  # plain names either way
    return result.model.state_dict()


def relative_difference(a: dict, b: dict) -> float:
    """|a - b| / |b| over all floating tensors together (L2)."""
    keys = [k for k, v in b.items() if v.is_floating_point()]
    num = sum(float((a[k] - b[k]).square().sum()) for k in keys)
    return (num / sum(float(b[k].square().sum()) for k in keys)) ** 0.5


def test_a_run_resumes_from_eager_into_compiled_and_back_and_ends_where_eager_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    eager = run(tmp_path, "eager", [(128, False)])
    for name, legs in (("eager_then_compiled", [(64, False), (128, True)]),
                       ("compiled_then_eager", [(64, True), (128, False)])):
        weights = run(tmp_path, name, legs)
        assert relative_difference(weights, eager) < 1e-3, name  # rounding only; other noise draws end far apart
