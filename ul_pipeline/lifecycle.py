"""The UL lifecycle as plain functions: shards -> Stage 1 -> latent store -> Stage 2 -> evaluation.

The CLI (`python -m ul_pipeline`) and the Dagster assets are two thin fronts on these functions.
Paths of checkpoints and evaluation outputs are local folders; shards and latent stores may live
on any fsspec URL (local or s3://) with `storage_options` for credentials.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from omegaconf import DictConfig

from ul_pipeline import config as config_lib
from ul_pipeline import distributed, metrics
from ul_pipeline.data import extract_latents, load_split_tensor, open_store, read_manifest, write_shards
from ul_pipeline.data import augment
from ul_pipeline.data.sources import build_source
from ul_pipeline.data.storage import is_local, url_to_fs, write_bytes_atomic
from ul_pipeline.fid import FeatureExtractor
from ul_pipeline.train.loop import Callback, TrainResult, autocast, resolve_device, resolve_precision
from ul_pipeline.train.recipes import load_base_model, load_stage1, train_stage1, train_stage2
from ul_pipeline.versioning import RunChoice, choose_run_dir, stage_code_version

Progress = Callable[[int, int], None]
StorageOptions = dict | None


def make_shards(cfg: DictConfig, shards_url: str, *, storage_options: StorageOptions = None,
                overwrite: bool = False, progress: Progress | None = None):
    """Write the configured source as train/val WebDataset shards + manifest; returns the manifest."""
    d = cfg.data
    source = build_source(d.source, d.uri, resolution=d.resolution, channels=d.channels,
                          storage_options=storage_options, frames=d.frames, fps=d.fps, seed=d.seed)
    return write_shards(source, shards_url, shard_size=d.shard_size, val_size=d.val_size, seed=d.seed,
                        resolution=d.resolution, channels=d.channels, num_classes=d.num_classes, limit=d.limit,
                        storage_options=storage_options, overwrite=overwrite, progress=progress,
                        frames=d.frames)


def check_shards_match(cfg: DictConfig, manifest) -> None:
    """The shards' resolution/channels/classes must be the config's; name both on mismatch."""
    want = (cfg.data.resolution, cfg.data.channels, cfg.data.num_classes, cfg.data.frames)
    have = (manifest.resolution, manifest.channels, manifest.num_classes, manifest.frames)
    if want != have:
        raise ValueError(f"shards {manifest.url} hold (resolution, channels, classes, frames) {have}; "
                         f"config data.resolution/data.channels/data.num_classes/data.frames say {want}")


def stage1_run(cfg: DictConfig, shards_url: str, run_dir: str | Path, *,
               storage_options: StorageOptions = None) -> RunChoice:
    """Where Stage 1 of `cfg` on these shards trains: run_dir, or a sibling when a complete run there differs."""
    manifest = read_manifest(shards_url, storage_options)
    return choose_run_dir(run_dir, "stage1", config_lib.to_dict(cfg), stage_code_version("stage1"),
                          {"dataset_manifest_sha256": manifest.sha256})


def run_stage1(cfg: DictConfig, shards_url: str, run_dir: str | Path, *, storage_options: StorageOptions = None,
               callbacks: Iterable[Callback] = ()) -> TrainResult:
    """Stage 1 on the train split (loaded into RAM) in the folder `stage1_run` picks (resume, reuse or afresh)."""
    manifest = read_manifest(shards_url, storage_options)
    check_shards_match(cfg, manifest)
    run_dir = stage1_run(cfg, shards_url, run_dir, storage_options=storage_options).run_dir
    images, _, _ = load_split_tensor(shards_url, "train", storage_options=storage_options)
    return train_stage1(cfg, images, run_dir, callbacks,
                        extra={"dataset_manifest_sha256": manifest.sha256, "shards_url": shards_url,
                               "stage_code_version": stage_code_version("stage1")})


def encoder_fn(model, device: torch.device, batch_size: int = 256, hflip: bool = False):
    """uint8 images (B, C, H, W) -> {z_clean, z_logvar (a learned encoder variance), z_clean_hflip (`hflip`:
    the latents of the mirrored images)}, float32 on CPU."""

    @torch.no_grad()
    def posteriors(images: torch.Tensor) -> list:
        return [model.posterior(metrics.to_float(images[i:i + batch_size].to(device)))
                for i in range(0, len(images), batch_size)]

    @torch.no_grad()
    def encode(images: torch.Tensor) -> dict[str, torch.Tensor]:
        posts = posteriors(images)
        out = {"z_clean": torch.cat([p.z_clean.float().cpu() for p in posts])}
        if posts[0].logvar is not None:
            if hflip:
                raise ValueError("data.hflip with a learned encoder variance (stage1.encoder_noise) is not supported")
            out["z_logvar"] = torch.cat([p.logvar.float().cpu() for p in posts])
        if hflip:
            out["z_clean_hflip"] = torch.cat([p.z_clean.float().cpu() for p in posteriors(augment.hflip(images))])
        return out

    return encode


def encode_latents(stage1_checkpoint: str | Path, shards_url: str, store_url: str, *, split: str = "train",
                   cfg: DictConfig | None = None, storage_options: StorageOptions = None,
                   store_storage_options: StorageOptions = None, progress: Progress | None = None):
    """Encode a split into a Zarr latent store (resumable); `cfg` supplies encode.* (default: the checkpoint's)."""
    device = resolve_device(cfg.compute.device if cfg is not None else "auto")
    model, stage1_cfg, meta = load_stage1(stage1_checkpoint, device=device)
    distributed.init(device, (cfg or stage1_cfg).compute.dist_timeout_s)  # blocks split over torchrun ranks
    enc = (cfg or stage1_cfg).encode
    store_meta = {"encoder_sha256": meta["sha256"], "stage1_config": config_lib.to_dict(stage1_cfg),
                  "logsnr_0": float(stage1_cfg.stage1.logsnr_0), "latent_shape": list(model.latent_shape),
                  "stage1_checkpoint": str(stage1_checkpoint), "code_version": meta.get("code_version"),
                  "encode_code_version": stage_code_version("encode")}
    hflip = bool(stage1_cfg.data.hflip)  # the encoder's own training data decides, not the caller's config
    store_meta["hflip"] = hflip
    return extract_latents(shards_url, split, store_url, encoder_fn(model, device, enc.batch_size, hflip), store_meta,
                           block_size=enc.block_size, batch_size=enc.batch_size, dtype=enc.dtype,
                           storage_options=storage_options, store_storage_options=store_storage_options,
                           progress=progress)


def run_stage2(cfg: DictConfig, store_url: str, run_dir: str | Path, *, expect_encoder_sha256: str | None = None,
               storage_options: StorageOptions = None, callbacks: Iterable[Callback] = ()) -> TrainResult:
    """Stage 2 on a complete latent store (loaded into RAM; noise is drawn per step, never stored)."""
    store = open_store(store_url, expect_encoder_sha256, storage_options=storage_options)
    run_dir = stage2_run(cfg, store, run_dir).run_dir
    stored_logsnr_0 = float(store.meta["logsnr_0"])
    if stored_logsnr_0 != cfg.stage1.logsnr_0:
        raise ValueError(f"latent store {store_url} has logsnr_0={stored_logsnr_0}, config stage1.logsnr_0="
                         f"{cfg.stage1.logsnr_0}: the base model's most precise level must match the encoder's")
    z_clean = torch.from_numpy(np.asarray(store.z_clean[:], dtype=np.float32))
    labels = torch.from_numpy(np.asarray(store.labels[:], dtype=np.int64))
    z_logvar = (None if store.z_logvar is None  # a learned encoder variance: Stage 2 draws from it
                else torch.from_numpy(np.asarray(store.z_logvar[:], dtype=np.float32)))
    z_clean_hflip = (None if store.z_clean_hflip is None  # data.hflip: each draw picks image or mirror
                     else torch.from_numpy(np.asarray(store.z_clean_hflip[:], dtype=np.float32)))
    return train_stage2(cfg, z_clean, labels, run_dir, callbacks, z_logvar=z_logvar, z_clean_hflip=z_clean_hflip,
                        extra={"latent_store_url": store_url, "encoder_sha256": store.meta["encoder_sha256"],
                               "dataset_manifest_sha256": store.meta.get("dataset_manifest_sha256"),
                               "encode_seconds": store.meta.get("encode_seconds"),
                               "stage_code_version": stage_code_version("stage2")})


def stage2_run(cfg: DictConfig, store, run_dir: str | Path) -> RunChoice:
    """Where Stage 2 of `cfg` on this opened latent store trains (see ul_pipeline.versioning)."""
    return choose_run_dir(run_dir, "stage2", config_lib.to_dict(cfg), stage_code_version("stage2"),
                          {"encoder_sha256": store.meta["encoder_sha256"]})


def save_grid(images_uint8: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save uint8 images (N, C, H, W) as one PNG grid."""
    from torchvision.utils import make_grid, save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images_uint8.float() / 255.0, nrow=nrow, padding=2, pad_value=1.0), path)
    return path


def append_metrics_row(history_url: str, row: dict[str, Any], storage_options: StorageOptions = None) -> None:
    """Append one row to a Parquet metrics history (written atomically) that any tool can read.

    On a local filesystem the read-append-write holds an exclusive lock on `<history>.lock`, so
    evaluations finishing at the same time both keep their rows. Object stores have no locks: two
    appends to one S3 history at the same instant can still lose one row (the file stays valid).
    """
    import polars as pl

    fs, path = url_to_fs(history_url, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with _history_lock(fs, path):
        new = pl.DataFrame([row])
        if fs.exists(path):
            with fs.open(path, "rb") as f:
                new = pl.concat([pl.read_parquet(f), new], how="diagonal_relaxed")
        buf = io.BytesIO()
        new.write_parquet(buf)
        write_bytes_atomic(fs, path, buf.getvalue())


@contextlib.contextmanager
def _history_lock(fs, path: str):
    """An exclusive flock on `path + '.lock'` for local filesystems; nothing for object stores."""
    if not is_local(fs):
        yield
        return
    import fcntl

    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@torch.no_grad()
def evaluate(stage1_checkpoint: str | Path, shards_url: str, out_dir: str | Path, *,
             base_checkpoint: str | Path | None = None, cfg: DictConfig | None = None,
             storage_options: StorageOptions = None, history_url: str | None = None,
             log: Callable[[str], None] = print, seed: int = 0,
             features: FeatureExtractor | None = None) -> dict[str, Any]:
    """Bits/pixel on held-out data, PSNR and rFID of reconstructions, gFID/KID of samples, grids.

    `cfg` supplies eval.* and sample.* (default: the Stage-1 checkpoint's). Every number is
    recorded with the sample count, sampler, steps and guidance that produced it, and the result
    says where the time went: `seconds_<part>` for each part, and the training and encoding times
    stored in the checkpoints. `features` is the FID/KID feature network (default: TF-Inception on
    the evaluation device); the real images' features are cached beside the shards (see
    ul_pipeline.fid_reference), so only the first evaluation of a dataset pays for them.
    """
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
        cfg = cfg or stage1_cfg
        ev, smp = cfg.eval, cfg.sample
        # samplers run under compute.precision (bf16 autocast where native); bits/pixel and FID features stay fp32
        precision = resolve_precision(cfg.compute.precision, device)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        images, labels, _ = load_split_tensor(shards_url, "val", storage_options=storage_options)
        n = min(ev.num_samples, len(images))
        images, labels = images[:n], labels[:n]
    g = torch.Generator(device=device).manual_seed(seed)
    result: dict[str, Any] = {
        "experiment": cfg.name, "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stage1_sha256": s1_meta["sha256"], "num_samples": n,
        "sampler": "ancestral" if smp.eta == smp.decoder_eta == 1.0 else "ddim-eta",
        "decoder_steps": smp.decoder_steps, "steps": smp.steps, "guidance": smp.guidance,
        "sampler_precision": precision, "eta": smp.eta, "decoder_eta": smp.decoder_eta,
        "c_lf": float(stage1_cfg.stage1.c_lf), "bias": float(stage1_cfg.stage1.bias),
    }

    if len(ul.image_shape) == 4:  # clips (C, T, H, W): per-frame metrics, FVD, frame strips and GIFs
        from ul_pipeline.video_eval import evaluate_video

        base = None
        if base_checkpoint is not None:
            base, _, b_meta = load_base_model(base_checkpoint, device=device)
            result["base_sha256"] = b_meta["sha256"]
        evaluate_video(ul, cfg, base, images, labels, out_dir, device, g, result, timed, log)
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
                recon.append(metrics.to_uint8(ul.reconstruct(x, smp.decoder_steps, generator=g, eta=smp.decoder_eta)).cpu())
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
        base, _, b_meta = load_base_model(base_checkpoint, device=device)
        if b_meta.get("encoder_sha256") not in (None, s1_meta["sha256"]):
            raise ValueError(f"base model {base_checkpoint} was trained on latents of encoder "
                             f"{b_meta['encoder_sha256']}, not {stage1_checkpoint} ({s1_meta['sha256']})")
        result["base_sha256"] = b_meta["sha256"]
        for key, stored in (("stage2_train_seconds", "train_seconds"), ("encode_seconds", "encode_seconds")):
            if b_meta.get(stored) is not None:
                result[key] = float(b_meta[stored])
        gen_labels = labels.to(device)  # the held-out class frequencies
        with timed("sample"):
            samples = []
            for s in batches(n):
                with autocast(precision, device):
                    z0 = base.sample_z0(gen_labels[s], smp.steps, smp.guidance, generator=g, eta=smp.eta)
                    samples.append(metrics.to_uint8(ul.decode(z0, smp.decoder_steps, generator=g, eta=smp.decoder_eta)).cpu())
                log(f"sampled {s.stop}/{n} ({time.perf_counter() - t0:.0f} s into the evaluation)")
            samples = torch.cat(samples)
        result["sample_grid"] = str(save_grid(samples[:k], out_dir / "samples.png", nrow=int(math.sqrt(k)) or 1))

    if ev.fid:
        from ul_pipeline.fid import InceptionFeatures, frechet_distance, kernel_inception_distance
        from ul_pipeline.fid_reference import reference_features

        features = InceptionFeatures(device) if features is None else features
        with timed("features_real"):
            f_real = reference_features(images, features, shards_url, split="val",
                                        manifest_sha256=read_manifest(shards_url, storage_options).sha256,
                                        storage_options=storage_options, log=log,
                                        progress=every_fifth("reference features"))
        with timed("features_recon"):
            f_recon = features(recon, progress=every_fifth("reconstruction features"))
        with timed("fid"):
            result["rfid"] = frechet_distance(f_real, f_recon)
        log(f"rFID {result['rfid']:.2f}")
        if samples is not None:
            with timed("features_gen"):
                f_gen = features(samples, progress=every_fifth("sample features"))
            start = time.perf_counter()
            result["gfid"] = frechet_distance(f_real, f_gen)
            result["kid"], result["kid_std"] = kernel_inception_distance(f_real, f_gen, subset_size=min(1000, max(2, n // 2)))
            timings["seconds_fid"] += time.perf_counter() - start
            log(f"gFID {result['gfid']:.2f}  KID {result['kid']:.4f}")
    return _finish_evaluation(result, timings, t0, out_dir, history_url, storage_options, log)


def _finish_evaluation(result: dict[str, Any], timings: dict[str, float], t0: float, out_dir: Path,
                       history_url: str | None, storage_options: StorageOptions,
                       log: Callable[[str], None]) -> dict[str, Any]:
    """Add the timings, write metrics.json and the history row; the result."""
    result.update(timings)
    result["eval_seconds"] = time.perf_counter() - t0
    log("evaluation took " + ", ".join(f"{k.removeprefix('seconds_')} {v:.1f} s" for k, v in timings.items())
        + f"; {result['eval_seconds']:.1f} s in all")
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    if history_url is not None:
        append_metrics_row(history_url, {k: json.dumps(v) if isinstance(v, (dict, list)) else v  # one table
                                         for k, v in result.items()}, storage_options)
    return result
