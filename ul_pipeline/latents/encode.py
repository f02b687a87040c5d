"""The Stage-1 encoder as extraction sees it: uint8 images in, the latent arrays a store keeps out.

Frame prediction (video, `stage2.context_frames` > 0) also stores `z_clean_context`: the encoding
of each clip with every frame after the context replaced by the last context frame, exactly the
clip that sampling encodes (`context_clip`, used by ul_pipeline.evaluation.video too). Why store
it rather than make the encoder causal in time: the encoder's 3x3x3 convs mix latent frames both
ways, so latent frame 0 of the whole clip carries frames the base model is asked to generate, and
sampling never has them. Training the base model on that context teaches it to rely on a leak.
Storing the padded-context encoding removes the mismatch exactly (training and sampling encode
the same pixels with the same encoder) and leaves Stage 1 untouched: image experiments compute
what they did, existing video encoders stay valid, and it costs one more encoder pass per clip at
extraction. A causal encoder would remove the leak at its source (and also give the decoder, at
sampling, the context latents it was trained on, which the padded encoding does not), but it
changes Stage 1 for every video run and is not what the paper states (16 -> 4 latent frames, no
causality mentioned); it stays the alternative to measure if the decoder's side matters.
"""

from __future__ import annotations

import torch

from ul_pipeline.data import augment
from ul_pipeline.evaluation import metrics


def context_clip(clips: torch.Tensor, context_frames: int) -> torch.Tensor:
    """Clips (B, C, T, H, W) whose frames after the first `context_frames` are copies of the last
    context frame: what sampling can encode of a clip it is to continue (any dtype, a new tensor)."""
    if clips.ndim != 5 or not 0 < context_frames < clips.shape[2]:
        raise ValueError(f"context_clip: clips {tuple(clips.shape)} must be (B, C, T, H, W) with "
                         f"0 < context_frames={context_frames} < T")
    last = clips[:, :, context_frames - 1:context_frames]  # (B, C, 1, H, W)
    return torch.cat([clips[:, :, :context_frames], last.expand(-1, -1, clips.shape[2] - context_frames, -1, -1)], 2)


def encoder_fn(model, device: torch.device, batch_size: int = 256, hflip: bool = False, context_frames: int = 0):
    """uint8 images (B, C, H, W) -> {z_clean, z_logvar (a learned encoder variance), z_clean_hflip (`hflip`:
    the latents of the mirrored images), z_clean_context (`context_frames` > 0, clips only: the
    encoding of `context_clip`)}, float32 on CPU."""
    if context_frames and hflip:
        raise ValueError("stage2.context_frames with data.hflip is not supported (the store keeps no mirrored "
                         "context encoding)")

    @torch.no_grad()
    def posteriors(images: torch.Tensor) -> list:
        return [model.posterior(metrics.to_float(images[i:i + batch_size].to(device)))
                for i in range(0, len(images), batch_size)]

    @torch.no_grad()
    def encode(images: torch.Tensor) -> dict[str, torch.Tensor]:
        posts = posteriors(images)
        out = {"z_clean": torch.cat([p.z_clean.float().cpu() for p in posts])}
        if posts[0].logvar is not None:
            if hflip or context_frames:
                raise ValueError(f"{'data.hflip' if hflip else 'stage2.context_frames'} with a learned encoder "
                                 "variance (stage1.encoder_noise) is not supported")
            out["z_logvar"] = torch.cat([p.logvar.float().cpu() for p in posts])
        if hflip:
            out["z_clean_hflip"] = torch.cat([p.z_clean.float().cpu() for p in posteriors(augment.hflip(images))])
        if context_frames:
            out["z_clean_context"] = torch.cat([p.z_clean.float().cpu()
                                                for p in posteriors(context_clip(images, context_frames))])
        return out

    return encode
