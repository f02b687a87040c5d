"""The planner and the GPU check on inputs users get wrong: GPU counts that do not divide the batch, one example
per device, and an output path relative to where they stand. Broken experiment files, for `plan` as for every
command: tests/config/test_config_files.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.plan.report import USABLE_FRACTION, plan_dict, plan_experiment
from tests.plan.test_plan import linear_trace

REPO = Path(__file__).resolve().parents[2]


def test_a_batch_the_gpus_do_not_divide_is_noted_because_training_refuses_it():
    cfg = load_config("smoke")  # batch 32 in both stages
    uneven = plan_experiment(cfg, gpus=3, gpu="h100", trace=linear_trace())
    assert all("not divisible by 3 GPUs" in p.note and p.batch_per_device == 11 for p in uneven.stages)
    assert "not divisible by 3 GPUs" in plan_dict(uneven)["stages"]["stage1"]["note"]
    assert not any(p.note for p in plan_experiment(cfg, gpus=4, gpu="h100", trace=linear_trace()).stages)


def test_one_example_per_device_still_finds_the_largest_batch_from_two_traced_points():
    """At batch 1 the fixed part of the step was counted as if every example needed it again."""
    cfg = load_config("smoke")
    s = plan_experiment(cfg, gpus=32, gpu="h100", trace=linear_trace(fixed=50_000)).stages[0]
    assert s.batch_per_device == 1
    room = int(80e9 * USABLE_FRACTION) - 1000 - 4 * 10 - 50_000  # usable - static - DDP - fixed
    assert s.max_batch_per_device == room // 100


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_gpu_check_writes_its_json_where_it_is_run_into_a_folder_it_makes(tmp_path):
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", __import__("sys").executable)}
    out = subprocess.run(["bash", str(REPO / "scripts/gpu_check.sh"), "new/folder/check.json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout and "Traceback" not in out.stderr
    assert json.loads((tmp_path / "new/folder/check.json").read_text())["cuda"] is False
