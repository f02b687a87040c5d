"""Sample-only gFID/KID of a (Stage-1, Stage-2) checkpoint pair under chosen sampler settings (issue 12 tuning).

    python benchmarks/sample_fid.py --s1 RUNS/stage1/last.pt --s2 RUNS/stage2/last.pt --shards SHARDS \\
        [--steps 32] [--dsteps 16] [--guidance 1 2 3] [--interval=all --interval=-3.4,2.5] [--eta 1]
        [--no-decoder-clip] [--n 500] [--out DIR] [--tag NAME]

--interval: the log-SNR ranges LO,HI where guidance applies (`sample.guidance_interval`; "all": every step).

Scores N samples against the cached reference features of the first N validation images (the same
ones `evaluate` uses), one JSON line per guidance value, and writes an 8x8 grid per setting.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ul_pipeline.diffusion.solvers import SamplerSpec  # noqa: E402
from ul_pipeline.evaluation import metrics  # noqa: E402
from ul_pipeline.data import load_split_tensor, read_manifest  # noqa: E402
from ul_pipeline.evaluation.fid import InceptionFeatures, frechet_distance, kernel_inception_distance  # noqa: E402
from ul_pipeline.evaluation.fid_reference import reference_features  # noqa: E402
from ul_pipeline.evaluation.image import save_grid  # noqa: E402
from ul_pipeline.stage1.training import load_stage1  # noqa: E402
from ul_pipeline.stage2.training import load_base_model  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--s1"); p.add_argument("--s2"); p.add_argument("--shards")
p.add_argument("--steps", type=int, default=32); p.add_argument("--dsteps", type=int, default=16)
p.add_argument("--guidance", type=float, nargs="+", default=[1.0]); p.add_argument("--n", type=int, default=500)
p.add_argument("--out", default="artifacts/tuning"); p.add_argument("--tag", default="")
p.add_argument("--interval", action="append", help="repeatable: --interval=all --interval=-3.4,2.5"); p.add_argument("--eta", type=float, default=1.0)
p.add_argument("--no-decoder-clip", action="store_true")
a = p.parse_args()
intervals = [None if v == "all" else tuple(float(x) for x in v.split(",")) for v in (a.interval or ["all"])]
Path(a.out).mkdir(parents=True, exist_ok=True)
torch.set_grad_enabled(False)
dev = torch.device("cpu")
ul, cfg, m1 = load_stage1(a.s1, device=dev)
base, _, m2 = load_base_model(a.s2, device=dev)
images, labels, _ = load_split_tensor(a.shards, "val")
images, labels = images[:a.n], labels[:a.n]
feats = InceptionFeatures(dev)
f_real = reference_features(images, feats, a.shards, split="val", manifest_sha256=read_manifest(a.shards).sha256)
spec = SamplerSpec(clip=not a.no_decoder_clip)
for gd, interval in [(gd, iv) for gd in a.guidance for iv in intervals]:
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter(); tb = 0.0
    samples = []
    for i in range(0, a.n, 250):
        tb0 = time.perf_counter()
        z0 = base.sample_z0(labels[i:i+250], a.steps, gd, generator=g, eta=a.eta, guidance_interval=interval)
        tb += time.perf_counter() - tb0
        samples.append(metrics.to_uint8(ul.decode(z0, a.dsteps, generator=g, sampler=spec)))
    samples = torch.cat(samples); ts = time.perf_counter() - t0
    f_gen = feats(samples)
    gfid = frechet_distance(f_real, f_gen); kid, _ = kernel_inception_distance(f_real, f_gen, subset_size=250)
    iv = "all" if interval is None else f"{interval[0]:g},{interval[1]:g}"
    tag = f"{a.tag}_s{a.steps}_d{a.dsteps}_g{gd}_i{iv}_eta{a.eta:g}" + ("_noclip" if a.no_decoder_clip else "")
    save_grid(samples[:64], f"{a.out}/{tag}.png", nrow=8)
    print(json.dumps(dict(tag=tag, gfid=round(gfid, 2), kid=round(kid, 4), sample_s=round(ts, 1), base_s=round(tb, 1))), flush=True)
