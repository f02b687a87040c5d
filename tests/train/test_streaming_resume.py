"""Exact resume in streaming mode: a run interrupted (or killed with SIGKILL) and re-run ends with the
weights of an uninterrupted streaming run, bit for bit, with DataLoader workers taking turns.

The checkpoint falls at step 3 with compute.workers=2, so the resumed stream starts on its second
worker's turn. The SIGKILL tests run the CLI three times each and are marked slow.
"""

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.stage1.batches import stage1_batches
from ul_pipeline.stage1.training import train_stage1_from
from tests.stage1.test_model import StopAt
from tests.synthetic import write_indexed_shards, write_indexed_store

REPO = Path(__file__).resolve().parents[2]
STREAMED = ["data.in_memory=false", "compute.workers=2", "data.shuffle_buffer=50", "compute.device=cpu",
            "compute.precision=fp32", "compute.deterministic=true"]


def stage(name: str) -> list[str]:
    return [f"{name}.train.batch_size=16", f"{name}.train.total_samples=96", f"{name}.train.checkpoint_every_samples=48"]


def assert_same_weights(a: Path, b: Path) -> None:
    ca, cb = (torch.load(p / "last.pt", weights_only=True) for p in (a, b))
    assert ca["samples_seen"] == cb["samples_seen"] == 96 and ca["loader"] == cb["loader"]
    assert ca["loader"]["source"] == "stream" and ca["loader"]["workers"] == 2
    for part in ("model", "ema"):
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), f"{part}.{k}"


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_an_interrupted_streaming_run_resumes_to_the_uninterrupted_weights(tmp_path, deterministic):
    shards = str(tmp_path / "shards")
    write_indexed_shards(shards)
    cfg = load_config("smoke", STREAMED + stage("stage1"))
    train_stage1_from(cfg, stage1_batches(cfg, shards), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train_stage1_from(cfg, stage1_batches(cfg, shards), tmp_path / "resumed", callbacks=[StopAt(3)])
    gc.collect()  # the interrupted run's DataLoader workers
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["step"] == 3
    resumed = train_stage1_from(cfg, stage1_batches(cfg, shards), tmp_path / "resumed")
    assert resumed.state.step == 6
    assert_same_weights(tmp_path / "full", tmp_path / "resumed")
    assert all(h["data_wait_s"] >= 0 and h["compute_s"] > 0 for h in resumed.history)


def cli(*args: str, helper: list[str] = ()) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *helper] if helper else [sys.executable, "-m", "ul_pipeline"]
    out = subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode in ((0, -9) if helper else (0,)), f"{args} failed ({out.returncode}):\n{out.stderr[-3000:]}"


@pytest.mark.slow  # ~40 s: three CLI runs per stage
@pytest.mark.parametrize("name", ["stage1", "stage2"])
def test_a_streaming_run_killed_with_sigkill_and_rerun_ends_bit_identical(tmp_path, name):
    if name == "stage1":
        write_indexed_shards(str(tmp_path / "data"))
        data = ["--shards", str(tmp_path / "data")]
    else:
        write_indexed_store(str(tmp_path / "data"))  # with z_logvar and z_clean_hflip: both reach the loss
        data = ["--latents", str(tmp_path / "data")]
    overrides = [*STREAMED, *stage(name)]
    cli(name, "-e", "smoke", *data, "--out", str(tmp_path / "full"), *overrides)
    marker = tmp_path / "killed.txt"
    kill = [str(REPO / "tests" / "helpers" / "kill_once.py"), str(marker), "64"]
    killed = [name, "-e", "smoke", *data, "--out", str(tmp_path / "killed"), *overrides]
    cli(*killed, helper=kill)
    assert marker.read_text() == "killed at samples_seen=64\n"  # it died after the checkpoint at 48
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["samples_seen"] == 48
    cli(*killed, helper=kill)  # the same command again: resumes at step 3
    assert_same_weights(tmp_path / "full", tmp_path / "killed")
