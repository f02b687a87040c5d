"""Video evaluation: bits per frame pixel, per-frame PSNR, frame-FID, FVD, and clips as pictures.

`evaluation.evaluate` hands over here when the Stage-1 model works on clips (C, T, H, W); the
result has the image evaluation's keys (bits_per_pixel is per frame pixel, psnr the mean of
per-frame PSNRs, the two grids are frame strips: one clip per row) plus frame_fid, fvd, rfvd with
`fvd_protocol`, and animated GIFs.

Generated clips continue held-out clips: their first `stage2.context_frames` frames are encoded
(the rest of each clip replaced by copies of the last context frame, `latents.encode.context_clip`,
so no future frame leaks into the context latents through the encoder's non-causal convs; Stage 2
trained on the same encoding, the store's z_clean_context), the base model samples the remaining
latent frames, and the decoder renders the whole clip. FVD and frame-FID compare whole clips
(context frames included; the protocol says so) with the held-out clips.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ul_pipeline.diffusion.solvers import decoder_sampler
from ul_pipeline.evaluation import metrics
from ul_pipeline.latents.encode import context_clip
from ul_pipeline.train.loop import autocast

FRAME_FID_STRIDE = 4  # frame-FID uses every 4th frame of each clip: Inception costs ~0.09 s per frame on 2 cores


def frame_psnr(reference: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of every frame of uint8 clips (B, C, T, H, W) -> (B, T), capped at 100."""
    ref = reference.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W)
    rec = reconstruction.transpose(1, 2).flatten(0, 1)
    return metrics.psnr_uint8(ref, rec).clamp(max=100.0).view(reference.shape[0], reference.shape[2])


def frames_of(clips: torch.Tensor) -> torch.Tensor:
    """uint8 clips (B, C, T, H, W) -> their frames (B*T, C, H, W)."""
    return clips.transpose(1, 2).flatten(0, 1)


def to_thwc(clips: torch.Tensor) -> np.ndarray:
    """uint8 clips (B, C, T, H, W) -> numpy (B, T, H, W, C), the layout of `ul_pipeline.evaluation.fvd`."""
    return clips.permute(0, 2, 3, 4, 1).contiguous().numpy()


def frame_strip(rows: torch.Tensor, path: str | Path) -> Path:
    """uint8 clips (R, C, T, H, W) as one PNG: row r holds the T frames of clip r."""
    from torchvision.utils import make_grid, save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = rows.shape[2]
    save_image(make_grid(frames_of(rows).float() / 255.0, nrow=t, padding=1, pad_value=1.0), path)
    return path


def save_gif(clips: torch.Tensor, path: str | Path, fps: float = 8.0, ncol: int = 8) -> Path:
    """uint8 clips (N, C, T, H, W) as one animated GIF: a grid of clips playing side by side."""
    from torchvision.utils import make_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for t in range(clips.shape[2]):
        grid = make_grid(clips[:, :, t].float() / 255.0, nrow=min(ncol, len(clips)), padding=1, pad_value=1.0)
        frames.append(Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def context_z0(ul, clips: torch.Tensor, context_frames: int, context_latents: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """z0 of the first `context_latents` latent frames, encoded from the context frames only (the
    clip padded with its last context frame: the z_clean_context Stage 2 trained on), in fp32."""
    x = metrics.to_float(context_clip(clips, context_frames))
    return ul.posterior(x).sample_z0(generator)[:, :, :context_latents]


def evaluate_video(ul, cfg, base, clips: torch.Tensor, labels: torch.Tensor, out_dir: Path, device,
                   generator: torch.Generator, result: dict[str, Any], timed: Callable,
                   log: Callable[[str], None] = print, precision: str = "fp32") -> dict[str, Any]:
    """Fill `result` with the video metrics of `ul` (and samples of `base`, when given) on held-out clips.

    The samplers run as the image evaluation's do and as `result` records them: sample.eta for the
    base model, sample.decoder_eta for the decoder, under `precision` (bf16 autocast or fp32); bits
    and the context encoding stay fp32 (the context as the latent store encoded it)."""
    ev, smp = cfg.eval, cfg.sample
    n = len(clips)
    batches = [slice(i, min(n, i + smp.batch_size)) for i in range(0, n, smp.batch_size)]
    with timed("bits"):
        nats = torch.cat([ul.latent_nats(metrics.to_float(clips[s].to(device)), repeats=4,
                                         generator=generator).cpu() for s in batches])
    result["latent_nats"] = nats.mean().item()
    result["bits_per_image"] = metrics.bits_per_image(result["latent_nats"])  # per clip
    result["bits_per_pixel"] = metrics.bits_per_pixel(result["latent_nats"], ul.image_shape)  # per frame pixel
    result["bits_per_latent_dim"] = metrics.bits_per_latent_dim(result["latent_nats"], ul.latent_shape)
    log(f"bits per frame pixel {result['bits_per_pixel']:.4f} on {n} held-out clips")

    with timed("reconstruct"), autocast(precision, device):
        recon = torch.cat([metrics.to_uint8(ul.reconstruct(metrics.to_float(clips[s].to(device)), smp.decoder_steps,
                                                           generator=generator, eta=smp.decoder_eta,
                                                           sampler=decoder_sampler(smp),
                                                           draws=smp.reconstruction_draws)).cpu()
                           for s in batches])
    per_frame = frame_psnr(clips, recon)  # (N, T)
    result["psnr"] = per_frame.mean().item()
    result["psnr_per_frame"] = [float(v) for v in per_frame.mean(0)]
    k = min(ev.grid_size, n, 8)
    pairs = torch.stack([clips[:k], recon[:k]], 1).flatten(0, 1)  # clip, its reconstruction, ...
    result["reconstruction_grid"] = str(frame_strip(pairs, out_dir / "reconstructions.png"))
    result["reconstruction_gif"] = str(save_gif(pairs, out_dir / "reconstructions.gif", cfg.data.fps, ncol=2))
    log(f"per-frame PSNR {result['psnr']:.2f} dB")

    samples = None
    if base is not None:
        k_lat = int(getattr(base, "context_latents", 0))
        ctx_frames = k_lat * (clips.shape[2] // ul.latent_shape[1])  # the base model's own context, in frames
        result["context_frames"] = ctx_frames
        with timed("sample"):
            out = []
            for s in batches:
                kwargs = {}
                if k_lat:  # fp32, outside autocast: the encoding Stage 2 trained on (z_clean_context)
                    kwargs["context_z0"] = context_z0(ul, clips[s].to(device), ctx_frames, k_lat, generator)
                with autocast(precision, device):
                    z0 = base.sample_z0(labels[s].to(device), smp.steps, smp.guidance, generator=generator,
                                        eta=smp.eta, guidance_interval=smp.guidance_interval, **kwargs)
                    out.append(metrics.to_uint8(ul.decode(z0, smp.decoder_steps, generator=generator,
                                                          eta=smp.decoder_eta, sampler=decoder_sampler(smp))).cpu())
            samples = torch.cat(out)
        kk = min(ev.grid_size, n, 16)
        result["sample_grid"] = str(frame_strip(samples[:kk], out_dir / "samples.png"))
        result["sample_gif"] = str(save_gif(samples[:kk], out_dir / "samples.gif", cfg.data.fps,
                                            ncol=int(math.sqrt(kk)) or 1))

    if ev.fid:
        from ul_pipeline.evaluation.fid import InceptionFeatures, frechet_distance

        features = InceptionFeatures(device)
        every = slice(None, None, FRAME_FID_STRIDE)
        result["frame_fid_frames"] = len(frames_of(clips[:, :, every]))
        with timed("features_real"):
            f_real = features(frames_of(clips[:, :, every]))
        with timed("fid"):
            result["frame_rfid"] = frechet_distance(f_real, features(frames_of(recon[:, :, every])))
            if samples is not None:
                result["frame_fid"] = frechet_distance(f_real, features(frames_of(samples[:, :, every])))
        with timed("fvd"):
            _fvd_into(result, clips, recon, samples, log, device=str(device))
    return result


def _fvd_into(result: dict[str, Any], clips, recon, samples, log, **fvd_kwargs) -> None:
    """rFVD of reconstructions and FVD of samples with the detector's protocol (ul_pipeline.evaluation.fvd)."""
    try:
        fvd_lib = importlib.import_module("ul_pipeline.evaluation.fvd")
    except ImportError as e:  # a tree without the detector: say so, report nothing
        result["fvd_missing"] = f"ul_pipeline.evaluation.fvd is not available ({e}); no FVD computed"
        log(result["fvd_missing"])
        return
    real = to_thwc(clips)
    result["rfvd"], protocol = fvd_lib.fvd(real, to_thwc(recon), **fvd_kwargs)
    result["fvd_protocol"] = {**protocol, "context_frames_included": True}
    log(f"rFVD {result['rfvd']:.2f}")
    if samples is not None:
        result["fvd"], protocol = fvd_lib.fvd(real, to_thwc(samples), **fvd_kwargs)
        result["fvd_protocol"] = {**protocol, "context_frames_included": True,
                                  "context_frames": result.get("context_frames", 0)}
        log(f"FVD {result['fvd']:.2f}")
