"""The planner against what a run measures: the training loop's logged FLOPs, torch's FLOP counter over a real
step, and the kernel's resident-memory peak of a real CPU step (tests/plan/rss_step.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.plan.hardware import GPUS
from ul_pipeline.plan.memory import StepMemory
from ul_pipeline.plan.report import plan_experiment
from ul_pipeline.plan.memory import LiveBytes, trace_step
from ul_pipeline.plan.report import _stage_workloads

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]
MEMORY_MARGIN = 0.10  # traced step peak vs the measured resident peak (measured: within 1%)


def linear_trace(static: int = 1000, fixed: int = 500, per_example: int = 100):
    """A stand-in for trace_step whose step peak is fixed + per_example x batch (closed-form checks)."""
    def trace(build, loss, batch, precision, grad_clip):
        return StepMemory(batch=batch, parameters=10, weights=static // 4, optimizer=static // 2, ema=static // 4,
                          activations=per_example * batch, step_peak=fixed + per_example * batch)
    return trace


def test_live_bytes_counts_each_storage_once_and_forgets_it_when_freed():
    counter = LiveBytes()
    with counter:
        x = torch.empty(1000)  # 4,000 bytes
        view = x[:10].view(2, 5)  # the same storage
        y = torch.empty(250, dtype=torch.float64)  # 2,000 bytes
        assert counter.current == 6000
        del x, view
        assert counter.current == 2000
        del y
    assert counter.current == 0 and counter.peak == 6000


@pytest.mark.parametrize("experiment", ["demo", "latent_study"])  # the `small` presets (and small_narrow_base)
def test_planned_flops_are_the_ones_the_training_loop_logs(tmp_path, experiment):
    from ul_pipeline.stage2.training import train_stage2

    cfg = load_config(experiment, ["stage2.train.batch_size=4", "stage2.train.total_samples=4",
                                   "stage2.train.log_every_samples=4", "compute.device=cpu", "compute.precision=fp32",
                                   "compute.tensorboard=false"])
    plan = plan_experiment(cfg, gpus=1, gpu="h100", trace=linear_trace())
    from ul_pipeline.train.flops import stage1_calls

    latent_shape = tuple(stage1_calls(cfg)["encoder"][0].latent_shape)
    result = train_stage2(cfg, torch.randn(8, *latent_shape), torch.zeros(8, dtype=torch.long), tmp_path)
    logged = result.history[-1]
    logged_flops = logged["gflops_per_s"] * 1e9 / logged["samples_per_s"]
    assert plan.stages[1].train_flops == pytest.approx(logged_flops, rel=1e-9)
    assert plan.stages[1].preset.startswith("small")


def test_planned_training_flops_are_within_5_percent_of_torchs_count_of_a_real_step():
    """3 x forward against FlopCounterMode over forward + backward of the real losses (small presets)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load_config("demo", ["compute.precision=fp32"])
    plan = plan_experiment(cfg, gpu="h100", trace=linear_trace())
    for stage, (build, loss, *_), planned in zip(("stage1", "stage2"), _stage_workloads(cfg).values(), plan.stages):
        torch.manual_seed(0)
        model, batch = build().train(), 2
        counter = FlopCounterMode(display=False, custom_mapping={  # as ul_pipeline.nets.presets counts
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda *a, **k: 0,
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda *a, **k: 0})
        with counter:
            loss(model, batch).backward()
        counted = counter.get_total_flops() / batch  # attention (a few %) left out of both sides below
        attention = planned.forward_flops - _without_attention_forward(build, loss)
        assert counted == pytest.approx(planned.train_flops - 3 * attention, rel=0.05), stage


def _without_attention_forward(build, loss) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build().train()
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda *a, **k: 0})
    with counter, torch.no_grad():
        loss(model, 1)
    return counter.get_total_flops()


@pytest.mark.parametrize("stage,batch", [("stage2", 32), ("stage1", 8)])
def test_traced_step_peak_is_within_10_percent_of_the_measured_resident_peak(stage, batch):
    cfg = load_config("demo", ["compute.precision=fp32"])
    build, loss, *_ = _stage_workloads(cfg)[stage]
    traced = trace_step(build, loss, batch, "fp32")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(REPO / "tests/plan/rss_step.py"), "demo", stage, str(batch)],
                         env=env, capture_output=True, text=True, timeout=600, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])["step_peak_bytes"]
    assert traced.step_peak == pytest.approx(measured, rel=MEMORY_MARGIN)
    assert traced.weights == traced.ema >= 4 * traced.parameters  # fp32 weights and buffers; the EMA copies them
    assert traced.optimizer == pytest.approx(8 * traced.parameters, rel=1e-3)  # two fp32 moments (+ step counters)


def test_fit_largest_batch_and_time_follow_from_the_traced_line():
    cfg = load_config("demo", ["stage2.train.batch_size=64", "stage1.train.batch_size=64"])
    gib, tc = 2**30, cfg.stage2.train
    plan = plan_experiment(cfg, gpus=4, gpu="l40s", mfu=0.5, trace=linear_trace(gib, 100, 2**24))
    s2 = plan.stages[1]
    usable = int(48e9 * 0.9)
    assert s2.batch_per_device == 16 and s2.ddp_bytes == 40  # 4 bytes per parameter of the stand-in
    assert s2.max_batch_per_device == (usable - gib - 40 - 100) // 2**24
    assert s2.fits
    assert s2.hours == pytest.approx(tc.total_samples * s2.train_flops / (4 * GPUS["l40s"].bf16_tflops * 1e12 * 0.5)
                                     / 3600)
    assert not plan_experiment(cfg, gpus=1, gpu="h100", trace=linear_trace(100 * gib)).stages[0].fits


def test_cli_plan_refuses_an_unknown_gpu_and_names_the_known_ones(capsys):
    from ul_pipeline.cli import main

    assert main(["plan", "-e", "smoke", "--gpu", "v100"]) == 1
    err = capsys.readouterr().err
    assert "v100" in err and "h100" in err and "l40s" in err
