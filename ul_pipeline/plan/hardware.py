"""Accelerators the planner knows (bf16 dense peak, memory) and a measured matmul peak for this machine.

The GPU figures are vendors' data-sheet numbers for dense bf16 tensor-core math (no 2:4 sparsity):
- H100 SXM5: 989.4 TFLOP/s bf16 dense, 80 GB HBM3 (NVIDIA H100 Tensor Core GPU datasheet; the sheet's
  1,979 TFLOP/s is "with sparsity", half of it dense).
- H200 SXM: 989 TFLOP/s bf16 dense (same Hopper chip as H100 SXM), 141 GB HBM3e (NVIDIA H200 datasheet).
- A100 SXM 80GB: 312 TFLOP/s bf16 dense, 80 GB HBM2e (NVIDIA A100 datasheet; 624 is with sparsity).
- L40S: 362.05 TFLOP/s bf16 dense, 48 GB GDDR6 (NVIDIA L40S datasheet; 733 is with sparsity).
Nothing reaches these peaks: the planner divides by them times a stated MFU (model FLOPs utilisation).
A CPU has no data-sheet peak here: `cpu` is measured (a large matmul, the same as benchmarks/bench_compute.py).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Accelerator:
    name: str  # what the plan prints
    bf16_tflops: float  # dense bf16 peak per device, TFLOP/s
    memory_gb: float  # device memory, 10^9 bytes


GPUS = {
    "h100": Accelerator("NVIDIA H100 SXM 80GB", 989.4, 80.0),
    "h200": Accelerator("NVIDIA H200 SXM 141GB", 989.4, 141.0),
    "a100": Accelerator("NVIDIA A100 SXM 80GB", 312.0, 80.0),
    "l40s": Accelerator("NVIDIA L40S 48GB", 362.05, 48.0),
}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else ""


def cpu_isa() -> dict:
    """What decides this CPU's bf16 speed: torch's kernel ISA level, native bf16 instructions, AMX."""
    flags = ""
    try:
        m = re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        flags = m.group(1) if m else ""
    except OSError:
        pass
    return {"cpu": cpu_model(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags.split(), "amx_bf16": "amx_bf16" in flags.split(),
            "threads": torch.get_num_threads()}


def matmul_gflops(dtype: torch.dtype, size: int, device: str | torch.device = "cpu",
                  min_seconds: float = 0.5, rounds: int = 3) -> float:
    """GFLOP/s (2 per multiply-add) of (size x size) @ (size x size) in `dtype`: the fastest of `rounds`
    rounds, each repeating the product into one output for at least `min_seconds` (a single timed
    product is too short to trust on shared cores). Fresh random operands, result read back at the end."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b, out=out)  # warm-up: kernel selection, page faults
    sync()
    best = 0.0
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            n += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        best = max(best, n * 2 * size**3 / elapsed / 1e9)
    if not torch.isfinite(out.float().sum()):
        raise FloatingPointError("matmul peak: the product is not finite")
    return best


def onednn_kernel(dtype: torch.dtype, size: int = 256) -> str:
    """The oneDNN implementation and ISA line a CPU matmul in `dtype` runs (from oneDNN's verbose log), or
    'not oneDNN (MKL or ATen)' when oneDNN logs nothing for it (torch runs fp32 matmuls through MKL)."""
    a = torch.randn(size, size).to(dtype)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)  # oneDNN writes to the C stdout
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.mm(a, a)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().splitlines()
    isa = next((ln.split("isa:")[1] for ln in lines if "isa:" in ln), "")
    impl = next((ln.split(",")[6] for ln in lines if ",primitive,exec,cpu,matmul" in ln), "")
    return f"oneDNN {impl} ({isa})" if impl else "not oneDNN (MKL or ATen)"
