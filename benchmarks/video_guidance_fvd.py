"""FVD of a trained video chain's samples at chosen guidance weights: the base model's sampler alone.

    python benchmarks/video_guidance_fvd.py --s1 RUNS/stage1/last.pt --s2 RUNS/stage2/last.pt \\
        --shards SHARDS [--guidance 1 2] [--n 48] [--seed 0] [--tree DIR] [--out DIR] [--tag NAME]
        [--real-features FILE.npz]

Samples continue the first N held-out clips as `evaluate` does (context encoded from the context
frames only, sample.steps / eta / decoder_steps / decoder_eta and compute.precision from the Stage-2
checkpoint's config) and are scored with the I3D FVD of `ul_pipeline.evaluation.fvd` against those N
clips (context frames included, as in `evaluate`). One JSON line per guidance weight goes to
OUT/fvd.jsonl, with the samples as OUT/TAG_g<w>_s<seed>.gif and .png (one clip per row).
`--real-features` caches the held-out clips' I3D features (computed when the file is missing), so
runs with other trees or seeds pay for them once; `--guidance` with no value only fills that cache.

`--tree` imports ul_pipeline from another checkout (default: this one), so the same checkpoints can
be sampled by an older commit's sampler, e.g. `git worktree add /tmp/old <commit>` and
`--tree /tmp/old --tag before`. The context draws come first from a generator seeded with --seed, so
both trees continue the same context latents. 48 clips resolve FVD differences of a few tens only:
compare seeds before reading a difference (evaluate's demo_video runs moved 760 -> 748 between
equivalent settings).
"""
import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--s1"); p.add_argument("--s2"); p.add_argument("--shards", required=True)
p.add_argument("--guidance", type=float, nargs="*", default=[1.0]); p.add_argument("--n", type=int, default=48)
p.add_argument("--seed", type=int, default=0); p.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
p.add_argument("--out", default="artifacts/video_guidance"); p.add_argument("--tag", default="")
p.add_argument("--real-features", default=None)
a = p.parse_args()
sys.path.insert(0, str(Path(a.tree).resolve()))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ul_pipeline  # noqa: E402
from ul_pipeline.data import load_split_tensor  # noqa: E402
from ul_pipeline.evaluation import fvd as fvd_lib, metrics  # noqa: E402
from ul_pipeline.evaluation.video import context_z0, frame_strip, save_gif, to_thwc  # noqa: E402
from ul_pipeline.stage1.training import load_stage1  # noqa: E402
from ul_pipeline.stage2.training import load_base_model  # noqa: E402
from ul_pipeline.train.loop import autocast, resolve_precision  # noqa: E402

out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
torch.set_grad_enabled(False)
dev = torch.device("cpu")
clips, labels, _ = load_split_tensor(a.shards, "val")
clips, labels = clips[:a.n], labels[:a.n]
t0 = time.perf_counter()
real = to_thwc(clips)
clips_sha256 = hashlib.sha256(real.tobytes()).hexdigest()
cache = Path(a.real_features) if a.real_features else None
if cache is not None and cache.exists():
    stored = np.load(cache)
    if str(stored["clips_sha256"]) != clips_sha256:
        raise SystemExit(f"{cache}: features of other clips than these {len(clips)} (--shards, --n); "
                         "delete it or pass another file")
    f_real = stored["features"]
else:
    f_real = fvd_lib.i3d_features(real)
    print(f"real I3D features of {len(clips)} clips: {time.perf_counter() - t0:.0f} s", flush=True)
    if cache is not None:
        np.savez(cache, features=f_real, clips_sha256=clips_sha256)
if not a.guidance:
    raise SystemExit(0)
ul, _, m1 = load_stage1(a.s1, device=dev)
base, cfg, m2 = load_base_model(a.s2, device=dev)
smp, precision = cfg.sample, resolve_precision(cfg.compute.precision, dev)
k_lat = base.context_latents
ctx_frames = k_lat * (clips.shape[2] // ul.latent_shape[1])
commit = subprocess.run(["git", "-C", a.tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
for w in a.guidance:
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    ctx = context_z0(ul, clips, ctx_frames, k_lat, g)  # fp32, outside autocast, as evaluate
    with autocast(precision, dev):
        z0 = base.sample_z0(labels, smp.steps, w, generator=g, eta=smp.eta, context_z0=ctx)
        samples = metrics.to_uint8(ul.decode(z0, smp.decoder_steps, generator=g, eta=smp.decoder_eta)).cpu()
    seconds_sample = time.perf_counter() - t0
    value = fvd_lib.frechet_distance(f_real, fvd_lib.i3d_features(to_thwc(samples)))
    name = f"{a.tag or 'run'}_g{w:g}_s{a.seed}"
    frame_strip(samples[:16], out / f"{name}.png")
    save_gif(samples[:16], out / f"{name}.gif", cfg.data.fps, ncol=4)
    row = {"tag": a.tag, "guidance": w, "seed": a.seed, "fvd": value, "n": len(clips), "steps": smp.steps,
           "eta": smp.eta, "decoder_steps": smp.decoder_steps, "decoder_eta": smp.decoder_eta,
           "precision": precision, "context_frames": ctx_frames, "tree_commit": commit,
           "ul_pipeline": str(Path(ul_pipeline.__file__).parent), "stage1_sha256": m1["sha256"],
           "base_sha256": m2["sha256"], "seconds_sample": seconds_sample,
           "seconds_total": time.perf_counter() - t0, "protocol": fvd_lib.protocol(real, to_thwc(samples))}
    print(json.dumps(row), flush=True)
    with open(out / "fvd.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
