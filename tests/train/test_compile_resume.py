"""compute.compile changes nothing a checkpoint records: a run resumes from eager into compiled and back and ends
where an eager run ends, up to rounding, in one process and under torchrun with 2 gloo ranks (DDP wraps the
compiled loss). Slow: torch.compile's cold compile takes minutes on 2 CPU cores.

Compiled code draws its random numbers with inductor's own generator unless `fallback_random` is set: the
training noise then differs from eager's like another seed's (a first run of this test without it ended with
entries 2e-3 apart where they are about 1e-2). The test sets it, so both draw the same numbers and only rounding differs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


LAUNCH = """import runpy, torch._inductor.config as c
c.fallback_random = True  # compiled code draws eager's random numbers
runpy.run_module("ul_pipeline", run_name="__main__", alter_sys=True)
"""
REPO = Path(__file__).resolve().parents[2]


def launch(tmp: Path, *args: str, nproc: int = 1) -> None:
    (tmp / "launch.py").write_text(LAUNCH)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(tmp / "launch.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


def test_under_torchrun_a_run_resumes_between_eager_and_compiled_and_ends_where_eager_ends(tmp_path, fmnist_400_shards):
    s1 = ["compute.device=cpu", "stage1.train.total_samples=64", "stage1.train.checkpoint_every_samples=64"]
    launch(tmp_path, "stage1", "-e", "smoke", "--shards", fmnist_400_shards, "--out", str(tmp_path / "s1"), *s1)
    store = str(tmp_path / "latents.zarr")
    launch(tmp_path, "encode", "-e", "smoke", "--checkpoint", str(tmp_path / "s1" / "last.pt"), "--shards",
           fmnist_400_shards, "--out", store, "compute.device=cpu", "encode.block_size=64")

    def two_ranks(name: str, legs: list[tuple[int, bool]]) -> dict:
        for total, compiled in legs:
            launch(tmp_path, "stage2", "-e", "smoke", "--latents", store, "--out", str(tmp_path / name), *COMMON,
                   f"stage2.train.total_samples={total}", f"compute.compile={str(compiled).lower()}", nproc=2)
        ckpt = torch.load(tmp_path / name / "last.pt", weights_only=False)
        assert ckpt["samples_seen"] == legs[-1][0]
        assert all(not k.startswith(("_orig_mod", "module")) for k in ckpt["model"])
        return ckpt["model"]

    eager = two_ranks("eager", [(128, False)])
    for name, legs in (("eager_then_compiled", [(64, False), (128, True)]),
                       ("compiled_then_eager", [(64, True), (128, False)])):
        assert relative_difference(two_ranks(name, legs), eager) < 1e-3, name
