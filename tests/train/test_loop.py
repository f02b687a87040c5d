"""The training loop's bookkeeping: precision, bf16 autocast, train_seconds across resumes, GFLOP/s, time
waiting for data, the run lock."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ul_pipeline.train import loop
from tests.stage1.test_model import StopAt
from ul_pipeline.train.loop import train
from ul_pipeline.train.progress import data_wait_text
from ul_pipeline.train.run_lock import RunFolderBusy, run_folder_lock


def train_cfg(**overrides):
    cfg = dict(lr=1e-2, betas=[0.9, 0.99], weight_decay=0.0, ema_decay=0.9, warmup_samples=8, grad_clip=1.0,
               batch_size=8, total_samples=48, checkpoint_every_samples=8, log_every_samples=16, seed=0)
    return OmegaConf.create({**cfg, **overrides})


def batches(samples_seen):
    g = torch.Generator().manual_seed(samples_seen)
    while True:
        yield (torch.randn(8, 4, generator=g),)


class Recorder:
    """loss_fn that records the dtype the network computed in."""

    def __init__(self):
        self.dtypes = set()

    def __call__(self, model, batch):
        out = model(batch[0])
        self.dtypes.add(out.dtype)
        loss = out.float().square().mean()
        return loss, {"loss": loss.item()}


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpus_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    assert loop.resolve_precision("auto", torch.device("cpu")) == expected
    assert loop.resolve_precision("fp32", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_bf16_runs_the_network_under_autocast_on_cpu_and_keeps_weights_fp32(tmp_path, precision, dtype):
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(4, 4), Recorder()
    result = train(model, loss_fn, batches, train_cfg(total_samples=16), tmp_path, kind="test", config={},
                   precision=precision)
    assert loss_fn.dtypes == {dtype}
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    with pytest.raises(ValueError, match="precision"):
        train(nn.Linear(4, 4), loss_fn, batches, train_cfg(), tmp_path / "other", kind="test", config={},
              precision="auto")


def test_train_seconds_add_up_across_resumes_and_gflops_are_logged(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(nn.Linear(4, 4), Recorder(), batches, train_cfg(), tmp_path, kind="test", config={},
              callbacks=[StopAt(3)], flops_per_example=1e6)
    interrupted = torch.load(tmp_path / "last.pt", weights_only=False)
    assert interrupted["step"] == 3 and interrupted["train_seconds"] > 0
    interrupted["train_seconds"] = 1000.0  # as if the first run had trained for 1000 s
    torch.save(interrupted, tmp_path / "last.pt")
    result = train(nn.Linear(4, 4), Recorder(), batches, train_cfg(), tmp_path, kind="test", config={},
                   flops_per_example=1e6)
    final = torch.load(tmp_path / "last.pt", weights_only=False)
    assert final["step"] == 6
    assert final["train_seconds"] > 1000.0  # the resumed run adds its own time to the first run's
    assert result.train_seconds >= final["train_seconds"]
    for logged in result.history:
        assert logged["gflops_per_s"] == pytest.approx(logged["samples_per_s"] * 1e6 / 1e9)


def test_time_waiting_for_data_is_logged_apart_from_computing(tmp_path):
    def slow_batches(samples_seen):  # a loader that cannot keep up
        for batch in batches(samples_seen):
            time.sleep(0.2)
            yield batch

    torch.manual_seed(0)
    result = train(nn.Linear(4, 4), Recorder(), slow_batches, train_cfg(total_samples=32), tmp_path, kind="test",
                   config={})
    assert len(result.history) == 2
    for logged in result.history:  # per-step means of the window
        assert logged["data_wait_s"] >= 0.19 and 0 < logged["compute_s"] < logged["data_wait_s"]
    text = data_wait_text({"data_wait_s": 0.03, "compute_s": 0.09})
    assert text == "data wait 30.0 ms/step (25% of 120 ms)"


def test_learning_rate_warms_up_holds_and_cools_down_to_zero():
    cfg = OmegaConf.create({"warmup_samples": 100, "cooldown_samples": 400, "total_samples": 1000})
    factors = [loop.lr_factor(n, cfg) for n in (0, 50, 100, 600, 800, 1000)]
    assert factors == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.5, 0.0])
    no_cooldown = OmegaConf.create({"warmup_samples": 100, "cooldown_samples": 0, "total_samples": 1000})
    assert loop.lr_factor(1000, no_cooldown) == 1.0


class NanGradientAfter(Recorder):
    """A finite loss whose gradient turns non-finite from call `n` on: d sqrt(u)/du at u = 0 times 0 is NaN."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def __call__(self, model, batch):
        loss, metrics = super().__call__(model, batch)
        self.calls += 1
        if self.calls >= self.n:
            loss = loss + torch.sqrt((model.weight - model.weight.detach()).square().sum())  # + 0, grad NaN
        return loss, metrics


def test_non_finite_weights_are_never_saved_and_the_last_good_checkpoint_stays(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match=f"non-finite weights at step 3 .* run folder {tmp_path}"):
        train(nn.Linear(4, 4), NanGradientAfter(3), batches, train_cfg(checkpoint_every_samples=8), tmp_path,
              kind="test", config={})
    kept = torch.load(tmp_path / "last.pt", weights_only=True)
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for part in ("model", "ema") for t in kept[part].values())


HOLDER = """
import sys
from ul_pipeline.train.run_lock import run_folder_lock
with run_folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin
"""


def test_a_second_run_of_a_locked_run_folder_fails_at_once_and_names_the_holder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        loss_fn = Recorder()
        with pytest.raises(RunFolderBusy, match=f"run folder {tmp_path} is in use: pid {holder.pid} on "):
            train(nn.Linear(4, 4), loss_fn, batches, train_cfg(), tmp_path, kind="test", config={})
        assert loss_fn.dtypes == set() and not (tmp_path / "last.pt").exists()  # nothing ran, nothing written
    finally:
        holder.stdin.close()
        holder.wait()
    result = train(nn.Linear(4, 4), Recorder(), batches, train_cfg(), tmp_path, kind="test", config={})
    assert result.state.samples_seen == 48  # the holder's exit released the lock


def test_the_run_folder_lock_is_released_when_a_run_fails(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(nn.Linear(4, 4), Recorder(), batches, train_cfg(), tmp_path, kind="test", config={},
              callbacks=[StopAt(2)])
    with run_folder_lock(tmp_path):  # free again: the failed run let go
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            train(nn.Linear(4, 4), Recorder(), batches, train_cfg(), tmp_path, kind="test", config={})


def test_a_kill_while_metrics_jsonl_is_written_leaves_no_half_line_behind_a_complete_checkpoint(tmp_path):
    """SIGKILL after the final last.pt is renamed in, half-way through metrics.jsonl: the file kept half a JSON
    line for good, since a re-run reuses the complete checkpoint and never wrote it again."""
    train(nn.Linear(4, 4), Recorder(), batches, train_cfg(), tmp_path, kind="test", config={})
    whole = (tmp_path / "metrics.jsonl").read_text()
    assert whole.count("\n") == 3
    (tmp_path / "metrics.jsonl").write_text(whole[: len(whole) // 2])  # what the kill left
    (tmp_path / ".metrics.jsonl.123-abcd.tmp").write_text(whole[:10])  # or this, from an atomic write
    result = train(nn.Linear(4, 4), Recorder(), batches, train_cfg(), tmp_path, kind="test", config={})
    assert result.state.samples_seen == 48  # reused, not trained again
    assert (tmp_path / "metrics.jsonl").read_text() == whole
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_fast_path_resumes_either_way_with_this_runs_optimizer(tmp_path):
    """compute.fast_transformer: a run resumes the other setting's checkpoint, with its own AdamW kind."""
    from ul_pipeline.nets.layers import Attention

    seen = []

    class Spy(Recorder):
        def __call__(self, model, batch):
            seen.append(model.fast)
            return super().__call__(model, batch)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attention(4, 2)

        @property
        def fast(self):
            return self.attn.fast

        def forward(self, x):
            return self.attn(x[:, None])[:, 0]
    torch.manual_seed(0)
    train(Net(), Spy(), batches, train_cfg(total_samples=16), tmp_path, kind="test", config={}, fast=True)
    result = train(Net(), Spy(), batches, train_cfg(total_samples=32), tmp_path, kind="test", config={}, fast=False)
    assert seen == [True, True, False, False]
    assert result.state.samples_seen == 32
    assert torch.load(tmp_path / "last.pt", weights_only=False)["optimizer"]["param_groups"][0]["fused"] is None
