"""Run as a script: the real CPU memory peak of one training step, measured by the kernel (not by our tracer).

    MALLOC_MMAP_THRESHOLD_=65536 python tests/plan/rss_step.py EXPERIMENT STAGE BATCH

With glibc's mmap threshold fixed low, every tensor of 64 KiB or more is its own mapping, returned to the
kernel when freed, so the resident set follows the live tensors. After a warm-up step (libraries, kernel
selection, optimizer moments), the process resets its resident high-water mark (/proc/self/clear_refs),
runs one more step and prints VmHWM minus the resident size before it: the step's peak above what stays.
"""

import json
import re
import sys
from pathlib import Path

import torch

from ul_pipeline.config import load_config
from ul_pipeline.plan.report import _stage_workloads
from ul_pipeline.train.ema import EMA


def status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def main(experiment: str, stage: str, batch: int) -> None:
    torch.set_num_threads(1)
    cfg = load_config(experiment, ["compute.precision=fp32"])
    build, loss, *_ = _stage_workloads(cfg)[stage]
    torch.manual_seed(0)
    model = build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    ema = EMA(model, 0.999)

    def step():
        value = loss(model, batch)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, 1)
        opt.zero_grad(set_to_none=True)

    step()
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    step()
    print(json.dumps({"step_peak_bytes": (status_kib("VmHWM") - before) * 1024}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
