"""The body of scripts/gpu_check.sh on a CUDA machine: gpu tests, paper-preset throughput, smoke chain, NCCL DDP.

    python benchmarks/gpu_check.py --out gpu_check.json [--skip tests,bench,smoke,ddp]

Each part runs as its own subprocess with a time limit, and the JSON records its exit status, wall time
and the tail of its output, so one failing part does not hide the others. MFU is the bf16 training
GFLOP/s of a network (3 x its forward FLOPs, ul_pipeline.nets) over the GPU's data-sheet dense bf16 peak
(ul_pipeline.plan.hardware.GPUS; a GPU not in that table gets the large bf16 matmul measured in the run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(name: str, cmd: list[str], timeout: int, env: dict | None = None) -> dict:
    """Run one part; its status, wall time and output tail."""
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **(env or {})})
        rc, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
    print(text[-2000:], flush=True)
    return {"returncode": rc, "wall_s": round(time.perf_counter() - t0, 1), "output_tail": text[-3000:]}


def data_sheet_peak(name: str) -> float | None:
    """bf16 dense TFLOP/s of a known GPU, from its device name."""
    from ul_pipeline.plan.hardware import GPUS

    key = next((k for k in GPUS if k in name.lower().replace(" ", "")), None)
    return GPUS[key].bf16_tflops if key else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: tests,bench,smoke,ddp")
    args = p.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before the long run, not after it
    import torch

    skip = set(filter(None, args.skip.split(",")))
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    report = {"cuda": True, "device": name, "gpus": gpus, "torch": torch.__version__,
              "cuda_version": torch.version.cuda, "data_sheet_bf16_tflops": data_sheet_peak(name)}
    py = sys.executable
    if "tests" not in skip:
        report["gpu_tests"] = run("gpu tests", [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                                "tests"], 1200)
    if "bench" not in skip:
        bench_json = Path(tempfile.mkdtemp()) / "bench.json"
        part = run("paper preset throughput", [py, "benchmarks/bench_compute.py", "--device", "cuda", "--presets",
                                               "paper", "--fast", "off", "--steps", "10", "--json", str(bench_json)],
                   1800)
        if bench_json.exists():
            bench = json.loads(bench_json.read_text())
            peak = report["data_sheet_bf16_tflops"] or bench["peak_gflops"]["bf16"] / 1e3
            for row in bench["rows"]:
                row["bf16_mfu"] = row["bf16_samples_per_s"] * row["train_gflops_per_example"] / (peak * 1e3)
            part["bench"] = bench
        report["paper_throughput"] = part
    if "smoke" not in skip:
        with tempfile.TemporaryDirectory() as d:
            cuda = ["compute.device=cuda"]
            steps = [("shard", ["--out", f"{d}/shards"]), ("stage1", ["--shards", f"{d}/shards", "--out", f"{d}/s1"]),
                     ("encode", ["--checkpoint", f"{d}/s1/last.pt", "--shards", f"{d}/shards", "--out", f"{d}/z.zarr"]),
                     ("stage2", ["--latents", f"{d}/z.zarr", "--out", f"{d}/s2"]),
                     ("evaluate", ["--stage1", f"{d}/s1/last.pt", "--base", f"{d}/s2/last.pt", "--shards",
                                   f"{d}/shards", "--out", f"{d}/eval"])]
            chain = {}
            for cmd, extra in steps:
                chain[cmd] = run(f"smoke {cmd}", [py, "-m", "ul_pipeline", cmd, "-e", "smoke", *extra, *cuda], 900)
                if chain[cmd]["returncode"] != 0:
                    break
            metrics = Path(d) / "eval" / "metrics.json"
            chain["metrics"] = json.loads(metrics.read_text()) if metrics.exists() else None
        report["smoke_chain_cuda"] = chain
    if "ddp" not in skip:
        if gpus >= 2:
            with tempfile.TemporaryDirectory() as d:
                report["ddp_nccl_2_gpus"] = [
                    run("shard", [py, "-m", "ul_pipeline", "shard", "-e", "smoke", "--out", f"{d}/shards"], 600),
                    run("stage1 on 2 GPUs (NCCL)", [py, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node=2", "-m", "ul_pipeline", "stage1", "-e", "smoke",
                                                    "--shards", f"{d}/shards", "--out", f"{d}/s1",
                                                    "compute.device=cuda"], 900)]
        else:
            report["ddp_nccl_2_gpus"] = f"skipped: {gpus} GPU"
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
