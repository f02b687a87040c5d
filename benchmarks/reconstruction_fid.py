"""PSNR/rFID of reconstructions against decoder steps and eta, and the real-vs-real FID floor (issue 12).

    python benchmarks/reconstruction_fid.py --s1 RUNS/stage1/last.pt --shards SHARDS [--floor] \\
        [--specs 1:32 1:16 0:32] [--cross]   # eta:decoder_steps; --cross: val[n:2n] against val[:n]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ul_pipeline.evaluation import metrics  # noqa: E402
from ul_pipeline.data import load_split_tensor, read_manifest  # noqa: E402
from ul_pipeline.evaluation.fid import InceptionFeatures, frechet_distance, kernel_inception_distance  # noqa: E402
from ul_pipeline.evaluation.fid_reference import reference_features  # noqa: E402
from ul_pipeline.stage1.training import load_stage1  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--s1", required=True)
p.add_argument("--shards", required=True)
p.add_argument("--specs", nargs="+", default=["1:32"], help="eta:decoder_steps")
p.add_argument("--floor", action="store_true", help="also FID of val[:n] against val[n:2n]")
p.add_argument("--cross", action="store_true",
               help="reconstruct val[n:2n] instead: FID against val[:n] as if the prior were perfect")
p.add_argument("--n", type=int, default=500)
a = p.parse_args()
torch.set_grad_enabled(False)
ul, cfg, _ = load_stage1(a.s1, device=torch.device("cpu"))
images, labels, _ = load_split_tensor(a.shards, "val")
feats = InceptionFeatures(torch.device("cpu"))
f_real = reference_features(images[:a.n], feats, a.shards, split="val", manifest_sha256=read_manifest(a.shards).sha256)
if a.floor:
    f2 = feats(images[a.n:2 * a.n])
    print(json.dumps(dict(floor_fid=frechet_distance(f_real, f2),
                          floor_kid=kernel_inception_distance(f_real, f2, subset_size=a.n // 2)[0])), flush=True)
src = images[a.n:2 * a.n] if a.cross else images[:a.n]
for spec in a.specs:
    eta, steps = float(spec.split(":")[0]), int(spec.split(":")[1])
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    rec = torch.cat([metrics.to_uint8(ul.reconstruct(metrics.to_float(src[i:i + 250]), steps, generator=g, eta=eta))
                     for i in range(0, a.n, 250)])
    psnr = metrics.psnr_uint8(src, rec).clamp(max=100).mean().item()
    print(json.dumps(dict(eta=eta, decoder_steps=steps, cross=a.cross, psnr=round(psnr, 2),
                          rfid=round(frechet_distance(f_real, feats(rec)), 2),
                          seconds=round(time.perf_counter() - t0, 1))), flush=True)
