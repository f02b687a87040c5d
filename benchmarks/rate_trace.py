"""The rate controller's transient: train the smoke Stage 1 as the rate-matched normal-prior baseline
(normal prior, learned encoder variance) with a target rate, and record the rate against samples.

Per step: the training batch's bits/pixel (what the controller sees) and beta. Every `--eval-every`
samples: the held-out rate of the EMA weights (what an evaluation reports) on images not trained on.

    nice -n 10 .venv/bin/python benchmarks/rate_trace.py --samples 28000 --law integral --out /tmp/int.json
    nice -n 10 .venv/bin/python benchmarks/rate_trace.py --samples 28000 --law pi --out /tmp/pi.json
    .venv/bin/python benchmarks/rate_trace.py --plot /tmp/int.json /tmp/pi.json --png docs/images/rate_trace.png

Data: the first 600 Fashion-MNIST training images (the smoke config's data.limit), padded to 32x32;
the first 500 train, the last 100 are held out. Everything else is configs/experiments/smoke.yaml.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ul_pipeline.config import load_config
from ul_pipeline.data import load_fashion_mnist
from ul_pipeline.evaluation.metrics import bits_per_pixel, to_float
from ul_pipeline.stage1.training import load_stage1, train_stage1
from ul_pipeline.train.loop import Callback


class HeldOut(Callback):
    """Per step: the batch rate and beta, appended to `live` (a run can be read while it goes on); at each
    checkpoint: the EMA weights' mean L_z on the held-out images, in bits/pixel."""

    def __init__(self, images: torch.Tensor, live: Path | None):
        self.images, self.points, self.live = images, [], live

    def on_log(self, state, metrics: dict) -> None:
        if self.live is not None:
            with self.live.open("a") as f:
                f.write(f"{state.samples_seen} {metrics['bits_per_pixel']:.6g} {metrics['latent_weight']:.6g}\n")

    def on_checkpoint(self, state, path: Path) -> None:
        model, _, _ = load_stage1(path)
        with torch.no_grad():
            nats = model.latent_nats(to_float(self.images), repeats=4, generator=torch.Generator().manual_seed(0))
        self.points.append((state.samples_seen, float(bits_per_pixel(nats.mean(), model.image_shape))))
        if self.live is not None:
            with self.live.open("a") as f:
                f.write(f"# held-out {state.samples_seen} {self.points[-1][1]:.6g}\n")


def trace(law: str, samples: int, target: float, eval_every: int, seed: int, live: Path | None = None,
          gain: float = 0.02) -> dict:
    images = torch.nn.functional.pad(torch.from_numpy(load_fashion_mnist("train")[0][:600]).unsqueeze(1), (2, 2, 2, 2))
    cfg = load_config("smoke", [
        "stage1.prior=normal", "stage1.encoder_noise=learned", "stage2.standardize=true",
        f"stage1.target_bits_per_pixel={target}", f"stage1.rate_control={law}", f"stage1.rate_gain={gain}",
        f"stage1.train.seed={seed}",
        f"stage1.train.total_samples={samples}", "stage1.train.log_every_samples=32",
        f"stage1.train.checkpoint_every_samples={eval_every}"])
    held = HeldOut(images[500:], live)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_stage1(cfg, images[:500], tmp, [held])
    return {"law": law, "target": target, "seed": seed, "gain": gain, "seconds": time.perf_counter() - t0,
            "samples": [h["samples_seen"] for h in result.history],
            "rate": [h["bits_per_pixel"] for h in result.history],
            "beta": [h["latent_weight"] for h in result.history], "held_out": held.points}


def plot(traces: list[dict], png: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_rate, ax_beta = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    target = traces[0]["target"]
    for i, t in enumerate(traces):
        color = f"C{i}"
        ax_rate.plot(t["samples"], t["rate"], color=color, lw=0.7, alpha=0.6, label=f"{t['law']} (gain {t.get('gain', 0.02)}): training batch")
        if t["held_out"]:
            s, r = zip(*t["held_out"])
            ax_rate.plot(s, r, "o-", color=color, ms=3, label=f"{t['law']}: held-out, EMA weights")
        ax_beta.plot(t["samples"], t["beta"], color=color, label=t["law"])
    for y, style in ((target, "-"), (0.5 * target, ":"), (1.5 * target, ":")):
        ax_rate.axhline(y, color="k", ls=style, lw=0.8)
    ax_rate.set_yscale("log")
    ax_rate.set_xlabel("training samples")
    ax_rate.set_ylabel(f"bits/pixel (target {target}; dotted: 0.5x and 1.5x)")
    ax_rate.legend(fontsize=7)
    ax_beta.set_yscale("log")
    ax_beta.set_xlabel("training samples")
    ax_beta.set_ylabel("beta (weight on L_z)")
    ax_beta.legend(fontsize=7)
    for ax in (ax_rate, ax_beta):
        ax.grid(alpha=0.3)
    fig.suptitle("Rate controller on the smoke data (normal prior, learned variance)")
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--law", default="integral", help="stage1.rate_control: integral (the study's) | pi")
    p.add_argument("--samples", type=int, default=28000)
    p.add_argument("--target", type=float, default=0.3)
    p.add_argument("--eval-every", type=int, default=1600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gain", type=float, default=0.02, help="stage1.rate_gain")
    p.add_argument("--out", help="write the trace as JSON here")
    p.add_argument("--plot", nargs="+", help="trace JSON files to draw (no training)")
    p.add_argument("--png", default="docs/images/rate_trace.png")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.plot:
        plot([json.loads(Path(f).read_text()) for f in args.plot], args.png)
        return
    live = Path(args.out).with_suffix(".live.txt")
    live.unlink(missing_ok=True)
    t = trace(args.law, args.samples, args.target, args.eval_every, args.seed, live, args.gain)
    Path(args.out).write_text(json.dumps(t) + "\n")
    print(f"{args.law}: {t['seconds']:.0f} s; min training rate {min(t['rate']):.4f}, max {max(t['rate']):.4f}; "
          f"held-out {t['held_out']}")


if __name__ == "__main__":
    main()
