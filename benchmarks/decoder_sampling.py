"""Where the decoder's speckle comes from: its x-prediction per log-SNR, and its samplers side by side.

    python benchmarks/decoder_sampling.py --s1 RUNS/stage1/last.pt --shards SHARDS --name demo \\
        [--n 200] [--fid-n 500] [--settings ancestral:t:16:1 dpm2m:logsnr:32:0 ...] [--fid-settings ...]

On held-out images (the shards' val split, its first --n):
1. x-prediction per log-SNR: z0 ~ q(z0 | x), x_t = alpha x + sigma eps at fixed log-SNRs, and the decoder's
   x_hat. Reported in grey levels (0..255): the RMS error of x_hat, the RMS error of passing the noise
   through (x_t / alpha, i.e. sigma / alpha eps), and `carried`: the share of the injected noise the
   prediction keeps as content, <x_hat - x, eps> / <sigma/alpha eps, eps> (0: removed, 1: passed through).
2. Reconstructions for each sampler setting solver:grid:steps:eta[:logsnr_end] (ul_pipeline/diffusion/
   solvers.py; options: a number = logsnr_end, noclip = clamp only the image, draws=K = the mean of K decoder
   samples of one z0; ancestral:t:16:1 is the paper's and the demos' sampler): PSNR, the last log-SNR before the
   clean step, and a high-pass noise figure in flat regions: where the original is flat (all channels
   within 4 grey levels over the 5x5 neighbourhood), the RMS of the reconstruction minus its own 3x3 mean,
   in grey levels (a flat original scores ~0; speckle scores its amplitude); speckled_share: the share of
   images whose own figure exceeds 4 grey levels. Also the error's RMS and mean there, and for colour the
   correlation of the error between channels (R-G, G-B).
3. rFID of the --fid-settings at --fid-n images (Inception features, as `evaluate`).
Samplers run under the checkpoint's compute.precision (bf16 autocast on CPU, as `evaluate` runs them).
Writes benchmarks/results/decoder_sampling_NAME.json and .md.
"""
import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ul_pipeline.data import load_split_tensor, read_manifest  # noqa: E402
from ul_pipeline.diffusion import alpha_sigma, x_from_v  # noqa: E402
from ul_pipeline.diffusion.solvers import SamplerSpec, logsnr_grid  # noqa: E402
from ul_pipeline.evaluation import metrics  # noqa: E402
from ul_pipeline.stage1.training import load_stage1  # noqa: E402
from ul_pipeline.train.loop import autocast, resolve_precision  # noqa: E402

DEFAULT_SETTINGS = [f"ancestral:t:{s}:{e}" for s in (16, 32, 64) for e in (1, 0)] + [
    "ancestral:t:256:1", "dpm2m:t:16:0", "dpm2m:t:32:0", "dpm2m:t:64:0", "ancestral:logsnr:32:1", "dpm2m:logsnr:16:0",
    "dpm2m:logsnr:32:0", "ancestral:t:16:1:4", "ancestral:t:16:1:8", "ancestral:t:16:1:noclip",
    "ancestral:logsnr:32:1:noclip", "ancestral:t:16:1:draws=4", "ancestral:t:16:1:noclip:draws=4"]
LOGSNRS = [-6.0, -3.0, 0.0, 2.0, 3.0, 4.0, 5.0, 5.78, 6.5, 7.0, 8.0, 9.0, 10.0]  # clipped to the schedule's end
GREY = 127.5  # grey levels per unit in [-1, 1]


def parse_setting(text: str) -> tuple[SamplerSpec, int, float, int]:
    """solver:grid:steps:eta[:options], options: a number (logsnr_end), noclip, draws=K (reconstruction mean)."""
    parts = text.split(":")
    end, clip, draws = None, True, 1
    for opt in parts[4:]:
        if opt == "noclip":
            clip = False
        elif opt.startswith("draws="):
            draws = int(opt[6:])
        elif opt not in ("", "-"):
            end = float(opt)
    return SamplerSpec(parts[0], parts[1], end, clip), int(parts[2]), float(parts[3]), draws


def flat_mask(orig_uint8: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) bool: all channels of the original within 4 grey levels over the 5x5 neighbourhood."""
    o = orig_uint8.float()
    hi = F.max_pool2d(o, 5, 1, 2).amax(1, keepdim=True)
    lo = -F.max_pool2d(-o, 5, 1, 2).amax(1, keepdim=True)
    return ((hi - lo) <= 4).expand_as(o)


def xpred_table(ul, images: torch.Tensor, precision: str, batch: int) -> list[dict]:
    x, flat = metrics.to_float(images), flat_mask(images)
    g = torch.Generator().manual_seed(1)
    z0 = torch.cat([ul.posterior(x[i:i + batch]).sample_z0(g) for i in range(0, len(x), batch)])
    eps = torch.randn(x.shape, generator=g)
    rows = []
    for lam in LOGSNRS:
        lam_t = torch.tensor(min(lam, ul.decoder.schedule.logsnr_max))
        alpha, sigma = alpha_sigma(lam_t)
        x_t = alpha * x + sigma * eps
        out = []
        for i in range(0, len(x), batch):
            with autocast(precision, torch.device("cpu")):
                v = ul.decoder.net(x_t[i:i + batch], lam_t.expand(len(x_t[i:i + batch])), z0[i:i + batch])
            out.append(x_from_v(x_t[i:i + batch], v.float(), alpha, sigma))
        err = torch.cat(out) - x
        passthrough = (sigma / alpha) * eps
        carried = (err * eps).sum() / (passthrough * eps).sum()
        carried_flat = (err * eps)[flat].sum() / (passthrough * eps)[flat].sum()
        rows.append(dict(logsnr=round(lam_t.item(), 2), xhat_rmse=round(GREY * err.pow(2).mean().sqrt().item(), 2),
                         passthrough_rmse=round(GREY * passthrough.pow(2).mean().sqrt().item(), 2),
                         carried=round(carried.item(), 3), xhat_rmse_flat=round(GREY * err[flat].pow(2).mean().sqrt().item(), 2),
                         carried_flat=round(carried_flat.item(), 3)))
    return rows


def flat_noise(orig: torch.Tensor, rec: torch.Tensor) -> dict:
    """High-pass noise in the originals' flat regions (uint8 (N, C, H, W) in, grey levels out)."""
    o, r, flat = orig.float(), rec.float(), flat_mask(orig)
    hp = r - F.avg_pool2d(F.pad(r, (1, 1, 1, 1), mode="replicate"), 3, 1)
    hp_orig = o - F.avg_pool2d(F.pad(o, (1, 1, 1, 1), mode="replicate"), 3, 1)
    err = r - o
    res = dict(flat_share=round(flat.float().mean().item(), 3),
               flat_hp_rms=round(hp[flat].pow(2).mean().sqrt().item(), 2),
               flat_hp_rms_original=round(hp_orig[flat].pow(2).mean().sqrt().item(), 2),
               flat_err_rms=round(err[flat].pow(2).mean().sqrt().item(), 2),
               flat_err_mean=round(err[flat].mean().item(), 2))
    per_image = ((hp**2 * flat).flatten(1).sum(1) / flat.flatten(1).sum(1).clamp(min=1)).sqrt()
    res["speckled_share"] = round((per_image > 4.0).float().mean().item(), 3)  # images with flat_hp_rms > 4 levels
    if o.shape[1] == 3:
        m = flat[:, 0]
        e = [err[:, c][m] - err[:, c][m].mean() for c in range(3)]
        corr = lambda a, b: (a * b).mean() / (a.pow(2).mean().sqrt() * b.pow(2).mean().sqrt())  # noqa: E731
        res.update(flat_err_corr_rg=round(corr(e[0], e[1]).item(), 2), flat_err_corr_gb=round(corr(e[1], e[2]).item(), 2))
    return res


def reconstruct(ul, images: torch.Tensor, spec: SamplerSpec, steps: int, eta: float, draws: int, precision: str,
                batch: int):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(0, len(images), batch):
        with autocast(precision, torch.device("cpu")):
            x = ul.reconstruct(metrics.to_float(images[i:i + batch]), steps, generator=g, eta=eta, sampler=spec,
                               draws=draws)
        out.append(metrics.to_uint8(x))
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--s1", required=True)
    p.add_argument("--shards", required=True)
    p.add_argument("--name", required=True, help="results file suffix (demo, demo_t2i, ...)")
    p.add_argument("--n", type=int, default=200, help="held-out images for the sweep (PSNR, noise)")
    p.add_argument("--xpred-n", type=int, default=256)
    p.add_argument("--fid-n", type=int, default=500, help="images for rFID of --fid-settings")
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS)
    p.add_argument("--fid-settings", nargs="*", default=[])
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--grid-settings", nargs="*", default=[],
                   help="a PNG: row of originals, then one row of reconstructions per setting (--grid-k images)")
    p.add_argument("--grid-k", type=int, default=16)
    p.add_argument("--grid-offset", type=int, default=0, help="first held-out image of the picture")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args()
    torch.set_grad_enabled(False)
    ul, cfg, meta = load_stage1(a.s1, device=torch.device("cpu"))
    precision = resolve_precision(cfg.compute.precision, torch.device("cpu"))
    images = load_split_tensor(a.shards, "val")[0]
    t0 = time.perf_counter()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    result = dict(checkpoint=str(a.s1), stage1_sha256=meta["sha256"], experiment=cfg.name, commit=commit,
                  precision=precision, n_sweep=a.n, n_fid=a.fid_n, threads=torch.get_num_threads(),
                  machine=platform.processor() or platform.machine(),
                  decoder_schedule=[round(ul.decoder.schedule.logsnr_min, 3), round(ul.decoder.schedule.logsnr_max, 3)],
                  c_lf=float(cfg.stage1.c_lf), bias=float(cfg.stage1.bias))
    result["xpred"] = xpred_table(ul, images[:a.xpred_n], precision, a.batch)
    print(json.dumps(result["xpred"]), flush=True)
    sweep = []
    for text in a.settings:
        spec, steps, eta, draws = parse_setting(text)
        t1 = time.perf_counter()
        rec = reconstruct(ul, images[:a.n], spec, steps, eta, draws, precision, a.batch)
        grid = logsnr_grid(ul.decoder.schedule, steps, spec.grid, spec.logsnr_end)
        row = dict(setting=text, solver=spec.solver, grid=spec.grid, steps=steps, eta=eta, clip=spec.clip, draws=draws,
                   logsnr_end=round(grid[-1].item(), 2), last_logsnr_before_clean=round(grid[-2].item(), 2),
                   psnr=round(metrics.psnr_uint8(images[:a.n], rec).clamp(max=100).mean().item(), 2),
                   **flat_noise(images[:a.n], rec), seconds=round(time.perf_counter() - t1, 1))
        sweep.append(row)
        print(json.dumps(row), flush=True)
    result["sweep"] = sweep
    if a.fid_settings:
        from ul_pipeline.evaluation.fid import InceptionFeatures, frechet_distance
        from ul_pipeline.evaluation.fid_reference import reference_features

        feats = InceptionFeatures(torch.device("cpu"))
        f_real = reference_features(images[:a.fid_n], feats, a.shards, split="val",
                                    manifest_sha256=read_manifest(a.shards).sha256)
        fid_rows = []
        for text in a.fid_settings:
            spec, steps, eta, draws = parse_setting(text)
            rec = reconstruct(ul, images[:a.fid_n], spec, steps, eta, draws, precision, a.batch)
            row = dict(setting=text, n=a.fid_n,
                       psnr=round(metrics.psnr_uint8(images[:a.fid_n], rec).clamp(max=100).mean().item(), 2),
                       rfid=round(frechet_distance(f_real, feats(rec)), 2), **flat_noise(images[:a.fid_n], rec))
            fid_rows.append(row)
            print(json.dumps(row), flush=True)
        result["fid"] = fid_rows
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.grid_settings:
        from ul_pipeline.evaluation.image import save_grid

        src = images[a.grid_offset:a.grid_offset + a.grid_k]
        rows = [src] + [reconstruct(ul, src, *parse_setting(text), precision, a.batch) for text in a.grid_settings]
        path = save_grid(torch.cat(rows), out / f"decoder_sampling_{a.name}.png", nrow=len(src))
        result["grid"] = dict(path=path.name, rows=["originals", *a.grid_settings], first_image=a.grid_offset)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / f"decoder_sampling_{a.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"decoder_sampling_{a.name}.md").write_text(markdown(result))
    print(f"wrote {out}/decoder_sampling_{a.name}.json and .md ({result['seconds']} s)")


def markdown(r: dict) -> str:
    lines = [f"# Decoder sampling: {r['experiment']} (Stage 1 {r['stage1_sha256'][:12]}, commit {r['commit']})", "",
             f"c_lf {r['c_lf']}, b {r['bias']}, decoder schedule log-SNR {r['decoder_schedule']}, samplers in "
             f"{r['precision']}, {r['threads']} threads. Grey levels are 0..255.", "",
             "## x-prediction per log-SNR", "", "carried: the share of x_t's noise kept in x_hat (0 removed, 1 passed "
             "through); flat: in the originals' flat regions, where the truth is known from the neighbours", "",
             "| log-SNR | x_hat RMSE | noise passed through | carried | x_hat RMSE, flat | carried, flat |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {x['logsnr']} | {x['xhat_rmse']} | {x['passthrough_rmse']} | {x['carried']} | {x['xhat_rmse_flat']} "
              f"| {x['carried_flat']} |" for x in r["xpred"]]
    cols = ["setting", "last_logsnr_before_clean", "psnr", "flat_hp_rms", "speckled_share", "flat_err_rms", "flat_err_mean"]
    if "flat_err_corr_rg" in r["sweep"][0]:
        cols += ["flat_err_corr_rg", "flat_err_corr_gb"]
    cols.append("seconds")
    lines += ["", f"## Reconstructions, N = {r['n_sweep']} (setting = solver:grid:steps:eta[:logsnr_end])", "",
              "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in r["sweep"]]
    if r.get("fid"):
        fc = ["setting", "n", "psnr", "rfid", "flat_hp_rms", "speckled_share", "flat_err_rms"]
        lines += ["", "## rFID", "", "| " + " | ".join(fc) + " |", "|" + "---|" * len(fc)]
        lines += ["| " + " | ".join(str(row[c]) for c in fc) + " |" for row in r["fid"]]
    if r.get("grid"):
        lines += ["", f"![reconstructions]({r['grid']['path']})", "",
                  "Rows, top to bottom: " + ", ".join(r["grid"]["rows"]) + f" (held-out images from {r['grid']['first_image']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
