"""The planner and the GPU check on inputs users get wrong: GPU counts that do not divide the batch, one example
per device, experiment files that are not YAML mappings, and an output path relative to where they stand."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.plan.memory import StepMemory
from ul_pipeline.plan.report import USABLE_FRACTION, plan_dict, plan_experiment

REPO = Path(__file__).resolve().parents[2]


def linear_trace(static: int = 1000, fixed: int = 50_000, per_example: int = 100):
    """A stand-in for trace_step whose step peak is fixed + per_example x batch."""
    def trace(build, loss, batch, precision, grad_clip):
        return StepMemory(batch=batch, parameters=10, weights=static // 4, optimizer=static // 2, ema=static // 4,
                          activations=per_example * batch, step_peak=fixed + per_example * batch)
    return trace


def test_a_batch_the_gpus_do_not_divide_is_noted_because_training_refuses_it():
    cfg = load_config("smoke")  # batch 32 in both stages
    uneven = plan_experiment(cfg, gpus=3, gpu="h100", trace=linear_trace())
    assert all("not divisible by 3 GPUs" in p.note and p.batch_per_device == 11 for p in uneven.stages)
    assert "not divisible by 3 GPUs" in plan_dict(uneven)["stages"]["stage1"]["note"]
    assert not any(p.note for p in plan_experiment(cfg, gpus=4, gpu="h100", trace=linear_trace()).stages)


def test_one_example_per_device_still_finds_the_largest_batch_from_two_traced_points():
    """At batch 1 the fixed part of the step was counted as if every example needed it again."""
    cfg = load_config("smoke")
    s = plan_experiment(cfg, gpus=32, gpu="h100", trace=linear_trace()).stages[0]
    assert s.batch_per_device == 1
    room = int(80e9 * USABLE_FRACTION) - 1000 - 4 * 10 - 50_000  # usable - static - DDP - fixed
    assert s.max_batch_per_device == room // 100


@pytest.mark.parametrize("text,what", [("stage1: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "YAML mapping"),
                                       ("stage1: {}\nstage1: {}\n", "not valid YAML")])
def test_cli_plan_names_an_experiment_file_that_is_not_a_yaml_mapping(tmp_path, capsys, text, what):
    from ul_pipeline.cli import main

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    assert main(["plan", "-e", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and what in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_gpu_check_writes_its_json_where_it_is_run_into_a_folder_it_makes(tmp_path):
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", __import__("sys").executable)}
    out = subprocess.run(["bash", str(REPO / "scripts/gpu_check.sh"), "new/folder/check.json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout and "Traceback" not in out.stderr
    assert json.loads((tmp_path / "new/folder/check.json").read_text())["cuda"] is False
