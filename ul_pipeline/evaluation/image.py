"""Evaluation of a Stage-1 (and Stage-2) checkpoint: bits/pixel, PSNR, rFID, gFID/KID, grids, history.

`evaluate` is the lifecycle's last step (the CLI's `evaluate` and the `evaluation` asset call
it); clips hand over to ul_pipeline.evaluation.video, feature metrics (FID, KID) are
ul_pipeline.evaluation.quality's, and each result is appended to the metrics history (history.py)
that sweeps and the study read.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig

from ul_pipeline.config import to_dict
from ul_pipeline.evaluation import metrics
from ul_pipeline.data import load_split_tensor
from ul_pipeline.data.storage import StorageOptions
from ul_pipeline.diffusion.solvers import decoder_sampler
from ul_pipeline.evaluation.fid import FeatureExtractor
from ul_pipeline.evaluation.history import append_metrics_row
from ul_pipeline.evaluation.pairing import check_base_encoder, check_text_encoder
from ul_pipeline.evaluation.prompts import encode_prompts, evaluate_prompts
from ul_pipeline.latents.text_features import read_captions
from ul_pipeline.stage2.text_conditioned import TextConditionedBaseModel
from ul_pipeline.evaluation.quality import feature_metrics
from ul_pipeline.evaluation.results import result_config
from ul_pipeline.train.loop import autocast, resolve_device, resolve_precision
from ul_pipeline.stage1.training import load_stage1
from ul_pipeline.stage2.training import load_base_model
from ul_pipeline.train.checkpoint import unfinished_note
from ul_pipeline.versioning import json_sha256


def save_grid(images_uint8: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save uint8 images (N, C, H, W) as one PNG grid."""
    from torchvision.utils import make_grid, save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images_uint8.float() / 255.0, nrow=nrow, padding=2, pad_value=1.0), path)
    return path


@torch.no_grad()
def evaluate(stage1_checkpoint: str | Path, shards_url: str, out_dir: str | Path, *,
             base_checkpoint: str | Path | None = None, cfg: DictConfig | None = None,
             storage_options: StorageOptions = None, history_url: str | None = None,
             log: Callable[[str], None] = print, seed: int = 0,
             features: FeatureExtractor | None = None, warn: Callable[[str], None] | None = None,
             prompts: Sequence[str] = ()) -> dict[str, Any]:
    """Bits/pixel on held-out data, PSNR and rFID of reconstructions, gFID/KID of samples, grids.

    `cfg` supplies eval.* and sample.* (default: the Stage-1 checkpoint's). Every number is
    recorded with the sample count, sampler, steps and guidance that produced it, and the result
    says where the time went: `seconds_<part>` for each part, and the training and encoding times
    stored in the checkpoints. `features` is the FID/KID feature network (default: TF-Inception on
    the evaluation device); the real images' features are cached beside the shards (see
    ul_pipeline.evaluation.fid_reference), so only the first evaluation of a dataset pays for them.
    An unfinished checkpoint (`complete` False) is evaluated with a warning through `warn` (default:
    `log`) and `stage1_complete` / `base_complete` False in the result. A text-conditioned base model samples
    the held-out captions instead of labels and adds `prompts_grid.png` (held-out prompts and `prompts`;
    ul_pipeline.evaluation.prompts).
    """
    warn = warn or (lambda message: log(f"WARNING: {message}"))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(part: str):
        start = time.perf_counter()
        yield
        timings[f"seconds_{part}"] = time.perf_counter() - start

    def every_fifth(what: str) -> Callable[[int, int], None]:
        """A progress callback that logs at each 20 % of `total` (not at every batch)."""
        start, last = time.perf_counter(), [0]

        def report(done: int, total: int) -> None:
            if done * 5 // total > last[0]:
                last[0] = done * 5 // total
                log(f"{what}: {done}/{total} images ({time.perf_counter() - start:.0f} s)")
        return report

    with timed("load"):
        device = resolve_device(cfg.compute.device if cfg is not None else "auto")
        ul, stage1_cfg, s1_meta = load_stage1(stage1_checkpoint, device=device)
        base = b_meta = None
        if base_checkpoint is not None:  # checked before any work: a wrong pair costs nothing
            base, _, b_meta = load_base_model(base_checkpoint, device=device)
            check_base_encoder(base_checkpoint, b_meta, stage1_checkpoint, s1_meta)
            check_text_encoder(base_checkpoint, b_meta)
        cfg = cfg or stage1_cfg
        ev, smp = cfg.eval, cfg.sample
        # samplers run under compute.precision (bf16 autocast where native); bits/pixel and FID features stay fp32
        precision = resolve_precision(cfg.compute.precision, device)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        val_images, val_labels, val_keys = load_split_tensor(shards_url, "val", storage_options=storage_options)
        n = min(ev.num_samples, len(val_images))
        images, labels = val_images[:n], val_labels[:n]
    g = torch.Generator(device=device).manual_seed(seed)
    result: dict[str, Any] = {
        "experiment": cfg.name, "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_sha256": json_sha256(result_config(to_dict(cfg))),  # what it computed (not where): a sweep's done test
        "stage1_sha256": s1_meta["sha256"], "num_samples": n,
        "sampler": "ancestral" if smp.eta == smp.decoder_eta == 1.0 else "ddim-eta",
        "decoder_steps": smp.decoder_steps, "steps": smp.steps, "guidance": smp.guidance,
        "sampler_precision": precision, "eta": smp.eta, "decoder_eta": smp.decoder_eta,
        "decoder_clip": smp.decoder_clip, "reconstruction_draws": smp.reconstruction_draws,
        "c_lf": float(stage1_cfg.stage1.c_lf), "bias": float(stage1_cfg.stage1.bias),
        "stage1_complete": _complete(stage1_checkpoint, s1_meta, warn),
        **({} if smp.guidance_interval is None else {"guidance_interval": list(smp.guidance_interval)}),
    }

    if len(ul.image_shape) == 4:  # clips (C, T, H, W): per-frame metrics, FVD, frame strips and GIFs
        from ul_pipeline.evaluation.video import evaluate_video

        if base_checkpoint is not None:
            result["base_sha256"] = b_meta["sha256"]
            result["base_complete"] = _complete(base_checkpoint, b_meta, warn)
        evaluate_video(ul, cfg, base, images, labels, out_dir, device, g, result, timed, log, precision)
        return _finish_evaluation(result, timings, t0, out_dir, history_url, storage_options, log)

    def batches(total: int):
        for i in range(0, total, smp.batch_size):
            yield slice(i, min(total, i + smp.batch_size))

    # bits/pixel from L_z with w == 1 on held-out images (4 draws of t and eps per image)
    with timed("bits"):
        nats = []
        for s in batches(n):
            nats.append(ul.latent_nats(metrics.to_float(images[s].to(device)), repeats=4, generator=g).cpu())
            log(f"bits/pixel: {s.stop}/{n} images")
        nats = torch.cat(nats)
    result["latent_nats"] = nats.mean().item()
    result["bits_per_image"] = metrics.bits_per_image(result["latent_nats"])
    result["bits_per_pixel"] = metrics.bits_per_pixel(result["latent_nats"], ul.image_shape)
    result["bits_per_latent_dim"] = metrics.bits_per_latent_dim(result["latent_nats"], ul.latent_shape)
    log(f"bits/pixel {result['bits_per_pixel']:.4f} on {n} held-out images")

    with timed("reconstruct"):
        recon = []
        for s in batches(n):
            x = metrics.to_float(images[s].to(device))
            with autocast(precision, device):
                recon.append(metrics.to_uint8(ul.reconstruct(x, smp.decoder_steps, generator=g, eta=smp.decoder_eta,
                                                            sampler=decoder_sampler(smp), draws=smp.reconstruction_draws)).cpu())
            log(f"reconstructed {s.stop}/{n} ({time.perf_counter() - t0:.0f} s into the evaluation)")
        recon = torch.cat(recon)
    result["psnr"] = metrics.psnr_uint8(images, recon).clamp(max=100.0).mean().item()
    k = min(ev.grid_size, n)
    pairs = torch.stack([images[:k], recon[:k]], 1).flatten(0, 1)  # original, reconstruction, ...
    result["reconstruction_grid"] = str(save_grid(pairs, out_dir / "reconstructions.png", nrow=16))
    log(f"PSNR {result['psnr']:.2f} dB")
    if s1_meta.get("train_seconds") is not None:
        result["stage1_train_seconds"] = float(s1_meta["train_seconds"])

    samples = None
    if base_checkpoint is not None:
        result["base_sha256"] = b_meta["sha256"]
        result["base_complete"] = _complete(base_checkpoint, b_meta, warn)
        for key, stored in (("stage2_train_seconds", "train_seconds"), ("encode_seconds", "encode_seconds")):
            if b_meta.get(stored) is not None:
                result[key] = float(b_meta[stored])
        n_gen = ev.num_generated or n
        rows = torch.arange(n_gen) % len(val_labels)  # held-out class frequencies, or captions
        text_model = isinstance(base, TextConditionedBaseModel)
        if text_model:  # sample i is of held-out caption i mod N (ul_pipeline.evaluation.prompts)
            val_captions = read_captions(shards_url, "val", val_keys, storage_options)
            conditions = encode_prompts([val_captions[i] for i in rows], b_meta, device, base.cross)
        elif prompts:
            raise ValueError(f"prompts given, but base model {base_checkpoint} is not text-conditioned")
        else:
            conditions = val_labels[rows].to(device)
        # common random numbers: the base sampler and the decoder draw from their own seeded streams, so
        # sample i starts from the same noise and label in every evaluation with the same seed and shapes
        g_base = torch.Generator(device=device).manual_seed(seed + 1)
        g_decoder = torch.Generator(device=device).manual_seed(seed + 2)
        with timed("sample"):
            samples = []
            for s in batches(n_gen):
                with autocast(precision, device):
                    z0 = base.sample_z0(conditions[s].to(device), smp.steps, smp.guidance, generator=g_base,
                                        eta=smp.eta, guidance_interval=smp.guidance_interval)
                    samples.append(metrics.to_uint8(ul.decode(z0, smp.decoder_steps, generator=g_decoder,
                                                              eta=smp.decoder_eta, sampler=decoder_sampler(smp))).cpu())
                log(f"sampled {s.stop}/{n_gen} ({time.perf_counter() - t0:.0f} s into the evaluation)")
            samples = torch.cat(samples)
        result["num_generated"] = n_gen
        result["sample_grid"] = str(save_grid(samples[:k], out_dir / "samples.png", nrow=int(math.sqrt(k)) or 1))
        if text_model:
            with timed("prompts"), autocast(precision, device):
                evaluate_prompts(result, ul, base, b_meta, val_captions=val_captions, prompts=prompts,
                                 samples=samples, sample_text=conditions, shards_url=shards_url, smp=smp,
                                 device=device, out_dir=out_dir, storage_options=storage_options, seed=seed, log=log)

    if ev.fid:
        cross = None
        if ev.cross_fid and len(val_images) >= 2 * n:  # the decoder on other images than the reference
            with timed("reconstruct_cross"):
                cross = torch.cat([metrics.to_uint8(ul.reconstruct(metrics.to_float(val_images[n:][s].to(device)),
                                                                   smp.decoder_steps, generator=g,
                                                                   eta=smp.decoder_eta,
                                                                   sampler=decoder_sampler(smp))).cpu()
                                   for s in batches(n)])
        elif ev.cross_fid:
            log(f"cross-FID skipped: it needs {2 * n} held-out images, the shards have {len(val_images)}")
        feature_metrics(result, images, recon, samples, cross, shards_url=shards_url, cfg=cfg, device=device,
                        out_dir=out_dir, storage_options=storage_options, features=features, timed=timed,
                        progress=every_fifth, log=log)
    return _finish_evaluation(result, timings, t0, out_dir, history_url, storage_options, log)


def _complete(path: str | Path, meta: dict, warn: Callable[[str], None]) -> bool:
    """Whether a checkpoint's run finished; warns when it did not."""
    note = unfinished_note(path, meta)
    if note is not None:
        warn(note)
    return note is None


def _finish_evaluation(result: dict[str, Any], timings: dict[str, float], t0: float, out_dir: Path,
                       history_url: str | None, storage_options: StorageOptions,
                       log: Callable[[str], None]) -> dict[str, Any]:
    """Add the timings, write metrics.json and the history row; the result."""
    result.update(timings)
    result["eval_seconds"] = time.perf_counter() - t0
    log("evaluation took " + ", ".join(f"{k.removeprefix('seconds_')} {v:.1f} s" for k, v in timings.items())
        + f"; {result['eval_seconds']:.1f} s in all")
    if history_url is not None:  # the history row first: metrics.json is the marker that the evaluation is done
        append_metrics_row(history_url, {k: json.dumps(v) if isinstance(v, (dict, list)) else v  # one table
                                         for k, v in result.items()}, storage_options)
    tmp = out_dir / f".metrics.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out_dir / "metrics.json")
    return result
