"""Text-to-image evaluation: prompts through the frozen text encoder, samples per prompt, the prompt grid, and
the prompt-image agreement metric's call site (issue 21).

A text model is evaluated like a class-conditional one, with the held-out split's captions in place of its
labels (sample i is of val caption i mod N, so gFID/KID compare against the held-out images of the same
captions); `prompts_grid.png` shows a fixed list of held-out prompts (the first HELD_OUT_PROMPTS distinct val
captions) and any prompts the caller adds, PROMPT_SAMPLES samples each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ul_pipeline.diffusion.solvers import SamplerSpec
from ul_pipeline.diffusion.solvers import decoder_sampler as sampler_of
from ul_pipeline.evaluation import metrics
from ul_pipeline.nets.text_base import TextCondition

HELD_OUT_PROMPTS = 8  # distinct held-out captions in prompts_grid.png
PROMPT_SAMPLES = 4  # samples per prompt in the grid


def encode_prompts(prompts: Sequence[str], base_meta: dict, device, cross: bool = True,
                   batch_size: int = 256, warn: Callable[[str], None] | None = None) -> TextCondition:
    """`prompts` through the frozen text encoder, as the base model reads them; ValueError when the model was
    trained on another encoder's features (checkpoint key text_encoder_sha256). A prompt over the encoder's
    token limit is cut to it, with a warning through `warn` (default: printed to stderr)."""
    from ul_pipeline.text.encoder import TextEncoder

    if not prompts:
        raise ValueError("no prompts to encode")
    blank = [i for i, p in enumerate(prompts) if not p.strip()]
    if blank:  # as a captioned source refuses an empty caption: the model never learned one
        raise ValueError(f"prompt {blank[0] + 1} of {len(prompts)} is empty ({prompts[blank[0]]!r}); give each "
                         "prompt some words")
    encoder = TextEncoder(device=device)
    trained_on = base_meta.get("text_encoder_sha256")
    if trained_on is not None and trained_on != encoder.sha256:
        raise ValueError(f"the base model was trained on features of text encoder {trained_on[:16]}, the installed "
                         f"one is {encoder.sha256[:16]} ({encoder.folder}): prompts would mean something else")
    for i, n in encoder.over_limit(list(prompts)):
        (warn or _stderr)(f"prompt {i + 1} of {len(prompts)} has {n} tokens, over the text encoder's limit of "
                          f"{encoder.max_length}: only its first {encoder.max_length} are read ({prompts[i][:40]!r}...)")
    length = encoder.num_tokens(list(prompts))
    parts = [encoder.encode(list(prompts[i:i + batch_size]), length) for i in range(0, len(prompts), batch_size)]
    pooled = torch.cat([p.pooled for p in parts])
    if not cross:
        return TextCondition(pooled)
    return TextCondition(pooled, torch.cat([p.token_states for p in parts]), torch.cat([p.mask for p in parts]))


def held_out_prompts(captions: Sequence[str], count: int = HELD_OUT_PROMPTS) -> list[str]:
    """The first `count` distinct captions, in split order: the same list in every evaluation of a shard set."""
    return list(dict.fromkeys(captions))[:count]


@torch.no_grad()
def sample_prompts(ul, base, text: TextCondition, *, per_prompt: int, steps: int, decoder_steps: int,
                   guidance: float, eta: float = 1.0, decoder_eta: float = 1.0, seed: int = 0,
                   device="cpu", batch_size: int = 256, decoder_sampler: SamplerSpec | None = None,
                   guidance_interval: tuple[float, float] | None = None) -> Tensor:
    """uint8 samples (P * per_prompt, C, H, W), prompt-major: base model -> z0 -> decoder, seeded."""
    rows = torch.arange(len(text)).repeat_interleave(per_prompt)
    g_base = torch.Generator(device=device).manual_seed(seed + 1)
    g_decoder = torch.Generator(device=device).manual_seed(seed + 2)
    out = []
    for i in range(0, len(rows), batch_size):
        z0 = base.sample_z0(text[rows[i:i + batch_size]].to(device), steps, guidance, generator=g_base, eta=eta,
                            guidance_interval=guidance_interval)
        out.append(metrics.to_uint8(ul.decode(z0, decoder_steps, generator=g_decoder, eta=decoder_eta,
                                             sampler=decoder_sampler)).cpu())
    return torch.cat(out)


def prompt_grid(images: Tensor, prompts: Sequence[str], path: str | Path, text_width: int = 240) -> Path:
    """One row per prompt: the prompt, then its samples (uint8 (P * K, C, H, W), prompt-major), as a PNG."""
    from PIL import Image, ImageDraw

    p = len(prompts)
    k = len(images) // p
    c, h, w = images.shape[1:]
    pad, scale = 2, max(1, 64 // h)  # small images drawn at least 64 px tall, so the text fits beside them
    cell_h, cell_w = h * scale, w * scale
    canvas = Image.new("RGB", (text_width + k * (cell_w + pad) + pad, p * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, prompt in enumerate(prompts):
        top = pad + r * (cell_h + pad)
        draw.multiline_text((4, top + 2), _wrap(prompt, text_width // 6), fill="black")
        for j in range(k):
            x = images[r * k + j].permute(1, 2, 0).numpy()  # (H, W, C) uint8
            tile = Image.fromarray(x[..., 0] if c == 1 else x).convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (text_width + pad + j * (cell_w + pad), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line][:4])


def agreement_metrics(result: dict[str, Any], samples: Tensor, sample_captions: Sequence[str], sample_pooled: Tensor,
                      null_samples: Tensor, *, train_images: Callable[[], Tensor], train_captions: Callable[[], list[str]],
                      train_pooled: Callable[[], Tensor], val_images: Tensor, val_captions: Sequence[str],
                      val_pooled: Tensor, text_encoder_sha256: str, cache_dir: Path, seed: int,
                      log: Callable[[str], None]) -> None:
    """Prompt-image agreement (ul_pipeline.evaluation.agreement) of `samples` (uint8, row i drawn for caption i)
    with its range: the ceiling (the real held-out images with their captions) and the floors (the samples
    against shuffled captions; `null_samples`, drawn from the null caption with the same seeds). Added to `result`
    as agreement_<score> (the samples), agreement_ceiling_<score>, agreement_floor_shuffled_<score>,
    agreement_floor_null_<score>; the dual encoder is fitted on the train split only and cached in `cache_dir`."""
    from ul_pipeline.evaluation import agreement

    t0 = time.perf_counter()
    with torch.autocast(samples.device.type, enabled=False):  # the metric's own fp32 model, whatever the sampler ran
        _agreement(result, agreement, samples, sample_captions, sample_pooled, null_samples, train_images,
                   train_captions, train_pooled, val_images, val_captions, val_pooled, text_encoder_sha256,
                   cache_dir, seed)
    result["agreement_seconds"] = time.perf_counter() - t0
    log(f"prompt-image agreement top-1 {result['agreement_top1']:.3f} (real held-out images "
        f"{result['agreement_ceiling_top1']:.3f}, shuffled prompts {result['agreement_floor_shuffled_top1']:.3f}, "
        f"null prompt {result['agreement_floor_null_top1']:.3f}, chance {result['agreement_chance']:.3f})")


def _agreement(result, agreement, samples, sample_captions, sample_pooled, null_samples, train_images, train_captions,
               train_pooled, val_images, val_captions, val_pooled, text_encoder_sha256, cache_dir, seed) -> None:
    model = agreement.fit_agreement_model(metrics.to_float(train_images()), train_pooled(), seed=seed,
                                          cache_dir=cache_dir, text_encoder_sha256=text_encoder_sha256)
    report = agreement.agreement_report(
        model, metrics.to_float(samples), sample_pooled, metrics.to_float(val_images), val_pooled, seed,
        null_images=metrics.to_float(null_samples), prompt_captions=list(sample_captions),
        test_captions=list(val_captions), extra_captions=train_captions(), extra_pooled=train_pooled())
    for part, scores in report.items():
        prefix = "agreement_" if part == "generated" else f"agreement_{part}_"
        result.update({prefix + k: float(v) for k, v in scores.items()})


def train_pooled(base_meta: dict, shards_url: str, keys: list[str], captions: list[str], device,
                 storage_options=None, log: Callable[[str], None] = print) -> Tensor:
    """The pooled vectors (N, D) of the train split of `shards_url` (`keys`, `captions` in its order): the base
    model's latent store holds them, encoded once, when it was extracted from these very shards; otherwise (other
    shards, or the store moved or deleted since Stage 2) they are encoded now, so each vector is its image's caption."""
    from ul_pipeline.data.manifest import read_manifest
    from ul_pipeline.latents.store import LatentStoreError, open_store
    from ul_pipeline.latents.text_features import open_text_features

    url = base_meta.get("latent_store_url")
    try:
        store = open_store(url, storage_options=storage_options)
        if (store.meta.get("dataset_manifest_sha256") == read_manifest(shards_url, storage_options).sha256
                and store.meta.get("split") == "train" and store.key_list() == keys):
            group = open_text_features(url, base_meta["text_encoder_sha256"], storage_options=storage_options)
            return torch.from_numpy(np.asarray(group["pooled"][:])).float()  # the pooled array alone
        why = f"it was extracted from other shards than {shards_url}"
    except (LatentStoreError, OSError, TypeError, KeyError) as e:
        why = str(e)
    log(f"train captions encoded now, not read from the latent store {url}: {why}")
    return encode_prompts(captions, base_meta, device, cross=False).pooled


def evaluate_prompts(result: dict[str, Any], ul, base, base_meta: dict, *, val_captions: Sequence[str],
                     prompts: Sequence[str], samples: Tensor, sample_text: TextCondition, shards_url: str, smp,
                     device, out_dir: Path, storage_options=None, seed: int = 0,
                     log: Callable[[str], None] = print) -> None:
    """A text model's extras: `prompts_grid.png` of the fixed held-out prompts and `prompts` (the caller's),
    and the agreement metric of the held-out-caption samples."""
    from ul_pipeline.data import load_split_tensor
    from ul_pipeline.latents.text_features import read_captions

    shown = list(dict.fromkeys([*held_out_prompts(val_captions), *prompts]))
    text = encode_prompts(shown, base_meta, device, base.cross)
    images = sample_prompts(ul, base, text, per_prompt=PROMPT_SAMPLES, steps=smp.steps,
                            decoder_steps=smp.decoder_steps, guidance=smp.guidance, eta=smp.eta,
                            decoder_eta=smp.decoder_eta, seed=seed, device=device, batch_size=smp.batch_size,
                            decoder_sampler=sampler_of(smp), guidance_interval=smp.guidance_interval)
    result["prompts"] = shown
    result["prompts_grid"] = str(prompt_grid(images, shown, Path(out_dir) / "prompts_grid.png"))
    log(f"prompt grid: {len(shown)} prompts x {PROMPT_SAMPLES} samples")

    if len(set(val_captions)) < 2:  # retrieval ranks a caption among others: nothing to rank against
        log(f"prompt-image agreement skipped: the held-out split has {len(set(val_captions))} distinct caption(s), "
            "it needs two or more")
        return
    train = {}

    def train_split() -> dict:
        if not train:
            images, _, keys = load_split_tensor(shards_url, "train", storage_options=storage_options)
            captions = read_captions(shards_url, "train", list(keys), storage_options)
            train.update(images=images, captions=captions,
                         pooled=train_pooled(base_meta, shards_url, list(keys), captions, device, storage_options, log))
        return train

    null_text = sample_text.dropped(torch.ones(len(sample_text), dtype=torch.bool))
    null_samples = sample_prompts(ul, base, null_text, per_prompt=1, steps=smp.steps,
                                  decoder_steps=smp.decoder_steps, guidance=0.0, eta=smp.eta,
                                  decoder_eta=smp.decoder_eta, seed=seed, device=device, batch_size=smp.batch_size,
                            decoder_sampler=sampler_of(smp))
    val_images = load_split_tensor(shards_url, "val", storage_options=storage_options)[0]
    val_pooled = encode_prompts(list(val_captions), base_meta, device, cross=False).pooled
    n = len(samples)
    agreement_metrics(result, samples, [val_captions[i % len(val_captions)] for i in range(n)], sample_text.pooled,
                      null_samples, train_images=lambda: train_split()["images"],
                      train_captions=lambda: train_split()["captions"], train_pooled=lambda: train_split()["pooled"],
                      val_images=val_images, val_captions=val_captions, val_pooled=val_pooled,
                      text_encoder_sha256=base_meta["text_encoder_sha256"], cache_dir=Path(out_dir) / "agreement",
                      seed=seed, log=log)


def _stderr(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)
