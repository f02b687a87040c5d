"""Does the Stage-1 decoder read z0? Train Stage 1 under several settings and follow, on held-out
images, the latent's cost L_z and what the decoder gains from z0.

The gain is the decoder's weighted loss (c_lf = 1, the run's b) with each image's own z0 minus the
same with z0 shuffled across images, under common random numbers: 0 means z0 is ignored.

    .venv/bin/python benchmarks/stage1_latent_use.py --samples 16000 \
        "c_lf=3,b=5,hold=6400" "c_lf=3,b=5,hold=0" "c_lf=1.5,b=5,hold=6400"

Needs the demo's shards (run the `demo` job or `python -m ul_pipeline shard -e demo`).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from ul_pipeline.config import load_config
from ul_pipeline.config.sweeps import data_hash
from ul_pipeline.data import load_split_tensor
from ul_pipeline.data.storage import artifact_root, join_url
from ul_pipeline.evaluation.metrics import to_float
from ul_pipeline.stage1 import decoder_term
from ul_pipeline.train.loop import Callback
from ul_pipeline.stage1.training import load_stage1, train_stage1

KEYS = {"c_lf": "stage1.c_lf", "b": "stage1.bias", "hold": "stage1.encoder_hold_samples"}


@torch.no_grad()
def latent_use(checkpoint: Path, x: torch.Tensor) -> dict[str, float]:
    """Held-out L_z (nats/image) and the decoder's gain from z0 (weighted nats/image), raw weights."""
    model, cfg, _ = load_stage1(checkpoint, ema=False)
    lz = model.latent_nats(x, repeats=2, generator=torch.Generator().manual_seed(0)).mean().item()
    z0 = model.posterior(x).sample_z0(torch.Generator().manual_seed(1))
    shuffled = z0[torch.randperm(len(x), generator=torch.Generator().manual_seed(2))]
    losses = []
    for z in (z0, shuffled):
        g = torch.Generator().manual_seed(3)
        losses.append(sum(decoder_term(model.decoder.net, x, z, model.decoder.schedule, 1.0, cfg.stage1.bias, g)
                          .mean().item() for _ in range(4)) / 4)
    return {"latent_nats": lz, "bits_per_pixel": lz / math.log(2) / x[0].numel(),
            "decoder_gain_from_z0": losses[1] - losses[0]}


class Follow(Callback):
    def __init__(self, x: torch.Tensor, label: str):
        self.x, self.label, self.t0 = x, label, time.perf_counter()

    def on_checkpoint(self, state, path):
        m = latent_use(path, self.x)
        print(f"{self.label:24s} samples {state.samples_seen:6d}  L_z {m['latent_nats']:7.1f} nats "
              f"({m['bits_per_pixel']:.4f} bits/px)  decoder gain from z0 {m['decoder_gain_from_z0']:7.1f}  "
              f"[{time.perf_counter() - self.t0:.0f}s]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="+", help='comma-separated c_lf=..,b=..,hold=.. (demo config otherwise)')
    ap.add_argument("--shards", default=None, help="shard set; default: the demo job's, {root}/demo/shards-{data hash}")
    ap.add_argument("--samples", type=int, default=16000, help="Stage-1 training samples per setting")
    ap.add_argument("--every", type=int, default=3200, help="measure every this many samples")
    args = ap.parse_args()
    args.shards = args.shards or join_url(artifact_root(), "demo", f"shards-{data_hash(load_config('demo'))}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images, _, _ = load_split_tensor(args.shards, "train")
    x = to_float(load_split_tensor(args.shards, "val")[0][:256])
    for setting in args.settings:
        pairs = dict(kv.split("=") for kv in setting.split(","))
        overrides = [f"{KEYS[k]}={v}" for k, v in pairs.items()] + [
            f"stage1.train.total_samples={args.samples}", f"stage1.train.checkpoint_every_samples={args.every}",
            f"stage1.train.log_every_samples={args.every}"]
        cfg = load_config("demo", overrides)
        with tempfile.TemporaryDirectory() as run_dir:
            train_stage1(cfg, images, run_dir, callbacks=[Follow(x, setting)])


if __name__ == "__main__":
    main()
