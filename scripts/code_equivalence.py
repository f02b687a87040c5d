"""Show that two commits compute the same thing, stage by stage, and record the evidence for committed results.

    .venv/bin/python scripts/code_equivalence.py OLD_REV [--results results/latent_study --write]

A stage's code version changes with any edit to a module it imports, also one that moves code or
touches only I/O. Committed study results (ul_pipeline/evaluation/results.py) are then stale
unless the new version is shown to compute what the old one did. This script runs the same small
pipeline (shards -> Stage 1 -> latents -> Stage 2, through `ul_pipeline.lifecycle`, in fp32 on one
thread) with the code of OLD_REV (a temporary git worktree) and with this checkout, for the
variants the studies use (UL, a rate-controlled normal prior with standardised latents, the SD-style
KL-VAE), and compares the trained weights (model and EMA), the latents and the base-model weights
bit for bit. For every stage whose outputs are equal in all variants it prints (and with --write
adds to `<results>/equivalent_code.json`) the entry old version -> new version with the evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "ul": [],
    "normal_rate_standardized": ["stage1.prior=normal", "stage1.encoder_noise=learned",
                                 "stage1.target_bits_per_pixel=0.2", "stage2.standardize=true"],
    "kl_vae": ["stage1.prior=normal", "stage1.decoder_loss=mse", "stage1.encoder_noise=learned",
               "stage1.latent_weight=0.001", "stage1.c_lf=1.0", "stage2.standardize=true"],
}
COMMON = ["data.limit=160", "data.val_size=32", "stage1.train.total_samples=96", "stage1.train.batch_size=16",
          "stage1.encoder_hold_samples=32", "stage2.train.total_samples=96", "stage2.train.batch_size=16",
          "compute.precision=fp32", "compute.device=cpu"]

WORKER = r'''
import hashlib, json, sys
import numpy as np, torch
torch.set_num_threads(1)
from ul_pipeline import lifecycle
from ul_pipeline.config import load_config
from ul_pipeline.versioning import stage_code_version
out, work, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

def tensors_sha(sd):
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode() + sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

def weights(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own fresh checkpoint
    return tensors_sha({**{"model." + k: v for k, v in ckpt["model"].items()},
                        **{"ema." + k: v for k, v in ckpt["ema"].items()}})

cfg = load_config("smoke", overrides)
shards = f"{work}/shards"
lifecycle.make_shards(cfg, shards)
s1 = lifecycle.run_stage1(cfg, shards, f"{work}/stage1").checkpoint
store = lifecycle.encode_latents(s1, shards, f"{work}/latents.zarr", cfg=cfg)
z = np.asarray(store.z_clean[:])
s2 = lifecycle.run_stage2(cfg, f"{work}/latents.zarr", f"{work}/stage2").checkpoint
json.dump({"stage1": weights(s1), "encode": hashlib.sha256(z.tobytes()).hexdigest(), "stage2": weights(s2),
           "versions": {s: stage_code_version(s) for s in ("stage1", "encode", "stage2")}}, open(out, "w"))
'''


def run_tree(tree: Path, variant: list[str], work: Path) -> dict:
    """Train the small pipeline with the code in `tree`; the hashes of what each stage produced."""
    out = work / "out.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", WORKER, str(out), str(work), json.dumps(COMMON + variant)],
                   cwd=tree, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", help="the commit whose code versions committed results carry")
    parser.add_argument("--results", help="a committed results folder (with --write: add the entries there)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    new_rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=REPO, check=True,
                       capture_output=True)
        try:
            runs = {}
            for name, variant in VARIANTS.items():
                runs[name] = {}
                for side, tree in (("old", old_tree), ("new", REPO)):
                    work = Path(tmp) / f"{name}-{side}"
                    work.mkdir()
                    runs[name][side] = run_tree(tree, variant, work)
                    print(f"{name:26s} {side}: {runs[name][side]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, capture_output=True)
    entries = []
    for stage in ("stage1", "encode", "stage2"):
        equal = all(r["old"][stage] == r["new"][stage] for r in runs.values())
        old_v, new_v = (next(iter(runs.values()))[s]["versions"][stage] for s in ("old", "new"))
        print(f"{stage}: outputs {'EQUAL' if equal else 'DIFFER'} in {len(runs)} variants; "
              f"code version {old_v} -> {new_v}")
        if equal and old_v != new_v:
            entries.append({"stage": stage, "old": old_v, "new": new_v, "evidence": (
                f"scripts/code_equivalence.py {args.old} at {new_rev}, "
                f"{datetime.now(timezone.utc).date()}: bitwise-equal outputs in variants {', '.join(runs)}")})
    if args.write and args.results and entries:
        path = Path(args.results) / "equivalent_code.json"
        known = json.loads(path.read_text()) if path.exists() else []
        seen = {(k["stage"], k["new"], k["old"]) for k in known}
        known += [e for e in entries if (e["stage"], e["new"], e["old"]) not in seen]
        path.write_text(json.dumps(known, indent=2) + "\n")
        print(f"wrote {len(entries)} entries to {path}")
    return 0 if all(all(r["old"][s] == r["new"][s] for r in runs.values()) for s in ("stage1", "encode", "stage2")) else 1


if __name__ == "__main__":
    sys.exit(main())
