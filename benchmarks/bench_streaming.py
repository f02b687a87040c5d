"""Training at dataset scale: peak memory of both stages on a data set and on one `--scale` times larger,
in memory (data.in_memory: true) and streamed, and the streaming loaders' speed against each stage's need.

    python benchmarks/bench_streaming.py [--experiment demo] [--num-samples 70000] [--scale 10] [--steps 20]
                                         [--workers N] [--json FILE]

The data set is the first `--num-samples` Fashion-MNIST images (Debian package dataset-fashion-mnist) as
shards; the larger one holds the same images `--scale` times over (keys made unique), written as its
own shards. Stage 2 reads synthetic latent stores of the experiment's latent shape and block size with
as many samples as the train splits (random values: memory and speed do not depend on them). Each
(stage, data set, mode) trains `--steps` steps of the experiment (its presets and batch sizes) through
ul_pipeline.lifecycle in a fresh process; the peak is the kernel's VmHWM of the training process, and
with DataLoader workers also the largest sampled PSS of the process tree. Streaming throughput is the
loader alone (no training) in samples/s, divided by the in-memory training's samples/s (the need).
A tiny check of the script itself: `--experiment smoke --num-samples 600 --scale 3 --steps 4`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MiB = 1 << 20


def proc_kib(pid: int, field: str, name: str = "status") -> int:
    """A `field: N kB` line of /proc/<pid>/<name> (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:  # the task ended
                continue
            out += kids
            todo += kids
    return out


class TreePss:
    """The largest proportional set size of this process and its children (DataLoader workers), sampled."""

    def __init__(self, every_s: float = 0.05):
        self.peak_kib, self.every_s, self._stop = 0, every_s, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            pss = sum(proc_kib(p, "Pss", "smaps_rollup") for p in [me, *descendants(me)])
            self.peak_kib = max(self.peak_kib, pss)
            self._stop.wait(self.every_s)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def overrides(args, stage: str, in_memory: bool, batch_size: int) -> list[str]:
    train = f"{stage}.train"
    return [f"data.in_memory={in_memory}", f"{train}.total_samples={args.steps * batch_size}",
            f"{train}.log_every_samples={max(1, args.steps // 4) * batch_size}",
            f"{train}.checkpoint_every_samples={args.steps * batch_size}", "compute.device=cpu",
            *([f"compute.workers={args.workers}"] if args.workers is not None else [])]


def child(spec: dict) -> dict:
    """One measurement in this fresh process: a short training run, or the streaming loader alone."""
    import torch

    from ul_pipeline import lifecycle
    from ul_pipeline.config import load_config
    from ul_pipeline.latents.store import open_store
    from ul_pipeline.stage1.batches import stage1_batches
    from ul_pipeline.stage2.batches import stage2_batches

    torch.set_num_threads(spec["threads"])
    cfg = load_config(spec["experiment"], spec["overrides"])
    with TreePss() as pss:
        if spec["what"] == "loader":
            source = (stage1_batches(cfg, spec["url"]) if spec["stage"] == "stage1"
                      else stage2_batches(cfg, open_store(spec["url"])))
            it = source(0)
            next(it)  # the first window and the workers' start
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < spec["seconds"]:
                n += len(next(it)[0])
            result = {"samples_per_s": n / (time.perf_counter() - t0)}
            del it
        else:
            run = (lifecycle.run_stage1 if spec["stage"] == "stage1" else lifecycle.run_stage2)
            history = run(cfg, spec["url"], spec["run_dir"]).history
            window = history[1:] or history  # the first window holds start-up
            result = {key: float(np.mean([h[key] for h in window]))
                      for key in ("samples_per_s", "data_wait_s", "compute_s")}
    return {**result, "peak_rss_mib": proc_kib(os.getpid(), "VmHWM") / 1024, "peak_tree_pss_mib": pss.peak_kib / 1024}


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                         text=True)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{spec['what']} {spec['stage']} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


class Repeated:
    """`base` `times` over, keys suffixed `-r<k>`: a data set `times` as large with the same pixels."""

    def __init__(self, base, times: int):
        self.base, self.times = base, times

    def __len__(self):
        return len(self.base) * self.times

    def __getitem__(self, i: int):
        s = self.base[i % len(self.base)]
        return s._replace(key=f"{s.key}-r{i // len(self.base)}")


def make_data(args, cfg, tmp: Path) -> dict[str, dict[str, str]]:
    """{x1, x<scale>: {stage1: shard URL, stage2: store URL, train: train samples}}."""
    from ul_pipeline.data import fashion_mnist_source, write_shards
    from ul_pipeline.latents.store import create_store, finalize_store
    from ul_pipeline.stage1 import UnifiedLatents

    source = fashion_mnist_source(resolution=cfg.data.resolution, channels=cfg.data.channels)
    base = [source[i] for i in range(args.num_samples)]
    latent_shape = UnifiedLatents.from_config(cfg).latent_shape
    data = {}
    for name, times in (("x1", 1), (f"x{args.scale}", args.scale)):
        t0 = time.perf_counter()
        shards = tmp / f"shards-{name}"
        manifest = write_shards(Repeated(base, times), str(shards), shard_size=cfg.data.shard_size,
                                val_size=cfg.data.val_size * times, seed=cfg.data.seed, resolution=cfg.data.resolution,
                                channels=cfg.data.channels, num_classes=cfg.data.num_classes)
        n = manifest.num_samples("train")
        meta = {"encoder_sha256": "bench", "stage1_config": {}, "logsnr_0": float(cfg.stage1.logsnr_0),
                "dataset_manifest_sha256": manifest.sha256, "split": "train"}
        store = create_store(str(tmp / f"latents-{name}.zarr"), n, latent_shape, cfg.encode.dtype,
                             cfg.encode.block_size, meta)
        rng = np.random.default_rng(0)
        for b in range(store.num_blocks):
            rows = np.arange(n)[store.block_slice(b)]
            store.write_block(b, rng.standard_normal((len(rows), *latent_shape), dtype=np.float32),
                              rows % cfg.data.num_classes, [str(i) for i in rows])
        finalize_store(store)
        data[name] = {"stage1": str(shards), "stage2": str(tmp / f"latents-{name}.zarr"), "train": n}
        print(f"data set {name}: {n} train samples, shards and latent store written in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--num-samples", type=int, default=70_000, help="Fashion-MNIST images in the 1x data set")
    parser.add_argument("--scale", type=int, default=10, help="how many times larger the second data set is")
    parser.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    parser.add_argument("--workers", type=int, default=None, help="compute.workers (default: the experiment's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per measurement")
    parser.add_argument("--loader-seconds", type=float, default=5.0, help="how long each loader is timed")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from ul_pipeline.config import load_config

    t_start = time.perf_counter()
    cfg = load_config(args.experiment, [f"data.limit={args.num_samples}"])
    print(f"{args.experiment}: {args.num_samples} Fashion-MNIST images and {args.scale}x that, {args.steps} steps, "
          f"{args.threads} threads, compute.workers={args.workers if args.workers is not None else cfg.compute.workers}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(args, cfg, Path(tmp))
        for stage in ("stage1", "stage2"):
            batch = cfg[stage].train.batch_size
            for name in data:
                for in_memory in (True, False):
                    spec = {"what": "train", "stage": stage, "url": data[name][stage], "experiment": args.experiment,
                            "overrides": overrides(args, stage, in_memory, batch), "threads": args.threads,
                            "run_dir": f"{tmp}/run-{stage}-{name}-{in_memory}"}
                    r = run_child(spec)
                    results.append({"stage": stage, "data": name, "train_samples": data[name]["train"],
                                    "mode": "in memory" if in_memory else "streamed", **r})
                    print(json.dumps(results[-1]), flush=True)
            loader = run_child({"what": "loader", "stage": stage, "url": data["x1"][stage], "threads": args.threads,
                                "experiment": args.experiment, "overrides": overrides(args, stage, False, batch),
                                "seconds": args.loader_seconds})
            need = next(r["samples_per_s"] for r in results if r["stage"] == stage and r["mode"] == "in memory")
            results.append({"stage": stage, "data": "x1", "mode": "loader", **loader, "need_samples_per_s": need,
                            "ratio": loader["samples_per_s"] / need})
            print(json.dumps(results[-1]), flush=True)
    print_tables(results, args.scale)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"total {time.perf_counter() - t_start:.0f} s")


def print_tables(results: list[dict], scale: int) -> None:
    print("\n| stage | data set (train samples) | in memory: peak RSS | streamed: peak RSS | streamed: peak PSS of "
          "process tree | in memory / streamed training samples/s | streamed: data wait per step |")
    print("|---|---|---|---|---|---|---|")
    for stage in ("stage1", "stage2"):
        for name in ("x1", f"x{scale}"):
            mem, stream = (next(r for r in results if (r["stage"], r["data"], r["mode"]) == (stage, name, m))
                           for m in ("in memory", "streamed"))
            wait = 100 * stream["data_wait_s"] / (stream["data_wait_s"] + stream["compute_s"])
            print(f"| {stage} | {name} ({mem['train_samples']:,}) | {mem['peak_rss_mib']:.0f} MiB | "
                  f"{stream['peak_rss_mib']:.0f} MiB | {stream['peak_tree_pss_mib']:.0f} MiB | "
                  f"{mem['samples_per_s']:.0f} / {stream['samples_per_s']:.0f} | "
                  f"{1e3 * stream['data_wait_s']:.1f} ms ({wait:.0f}%) |")
    print("\n| stage | training need (in-memory samples/s) | streaming loader alone (samples/s) | ratio |")
    print("|---|---|---|---|")
    for r in results:
        if r["mode"] == "loader":
            print(f"| {r['stage']} | {r['need_samples_per_s']:.0f} | {r['samples_per_s']:.0f} | {r['ratio']:.1f}x |")


if __name__ == "__main__":
    main()
