"""Text-image agreement: does a generated image show its prompt? Scored by our own dual encoder (`agreement_model.py`).

- `fit_agreement_model(train_images, train_pooled, seed)`: the dual encoder, trained on the train split
  only, cached on disk under a key of what it was fitted on (see `agreement_cache_key`);
- `agreement_scores(model, images, pooled)`: retrieval of each image's own caption among it and up to
  99 other distinct captions of the evaluation set (`top1`, `top5`, `chance`), and, with the caption
  texts, among the captions of the same base in other skin tones only (`tone_top1`: the text before ':');
- `agreement_report(...)`: the generated images' scores with their ceiling (real test images with their
  own captions) and floors (the same generated images against shuffled prompts; null-prompt images),
  so a score is never read without the range it lives in.

Ties count against the image (a distractor scoring equal to the own caption outranks it), so a model
that outputs constants scores chance, not 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ul_pipeline.evaluation.agreement_model import AgreementConfig, AgreementModel, train_agreement_model

CACHE_VERSION = 1  # bump when the model or its training changes what a key means
EMBED_BATCH = 512


def _tensor_sha256(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous().float()
    return hashlib.sha256(repr(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()


def _check_pairs(images: torch.Tensor, pooled: torch.Tensor, what: str,
                 captions: Optional[Sequence[str]] = None) -> None:
    """Loud errors for what is easy to get wrong: shapes, lengths, uint8 pixels."""
    if images.ndim != 4:
        raise ValueError(f"{what}: images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if pooled.ndim != 2:
        raise ValueError(f"{what}: pooled text vectors must be (N, D), got shape {tuple(pooled.shape)}")
    if len(images) != len(pooled):
        raise ValueError(f"{what}: {len(images)} images but {len(pooled)} pooled text vectors")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{what}: {len(images)} images but {len(captions)} captions")
    if len(images) == 0:
        raise ValueError(f"{what}: no images")
    if not images.is_floating_point() or images.min() < -1.001 or images.max() > 1.001:
        raise ValueError(f"{what}: images must be float in [-1, 1] (got {images.dtype}, range "
                         f"[{float(images.min())}, {float(images.max())}])")


def agreement_cache_key(train_images: torch.Tensor, train_pooled: torch.Tensor, seed: int, config: AgreementConfig,
                        text_encoder_sha256: str = "") -> str:
    """sha256 of what a fitted model depends on: the train images and pooled vectors (bytes), the text
    encoder's weights hash, the seed, the hyper-parameters and CACHE_VERSION."""
    spec = {"version": CACHE_VERSION, "images": _tensor_sha256(train_images), "pooled": _tensor_sha256(train_pooled),
            "text_encoder_sha256": text_encoder_sha256, "seed": seed, "config": config.to_dict()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def fit_agreement_model(train_images: torch.Tensor, train_pooled: torch.Tensor, seed: int, *,
                        config: Optional[AgreementConfig] = None, cache_dir: Optional[str | Path] = None,
                        text_encoder_sha256: str = "") -> AgreementModel:
    """The agreement model fitted on the train split (images (N, C, H, W) in [-1, 1], pooled text (N, D)).

    With `cache_dir`, the model is read from `agreement-<key[:16]>.pt` there when it exists (the key:
    `agreement_cache_key`), else fitted and written atomically (a temporary file, then a rename). The
    returned model's `meta` holds the key, fit seconds and whether it came from the cache.
    """
    config = config or AgreementConfig()
    _check_pairs(train_images, train_pooled, "fit_agreement_model")
    key = agreement_cache_key(train_images, train_pooled, seed, config, text_encoder_sha256)
    path = Path(cache_dir) / f"agreement-{key[:16]}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            return _read_cached(path, key)
        except Exception as e:  # noqa: BLE001 - a cache is derived data: an unreadable one is fitted again
            warnings.warn(f"agreement cache {path} cannot be used ({type(e).__name__}: {e}); fitting the model "
                          "again and replacing it", RuntimeWarning, stacklevel=2)
    start = time.perf_counter()
    model = train_agreement_model(train_images.float().cpu(), train_pooled.float().cpu(), seed, config)
    meta = {"key": key, "channels": int(train_images.shape[1]), "text_dim": int(train_pooled.shape[1]),
            "config": config.to_dict(), "seed": seed, "num_train": len(train_images),
            "text_encoder_sha256": text_encoder_sha256, "fit_seconds": time.perf_counter() - start}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"state": model.state_dict(), "meta": meta}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    model.meta = {**meta, "from_cache": False, "path": None if path is None else str(path)}
    return model


def _read_cached(path: Path, key: str) -> AgreementModel:
    """The model cached at `path`; an error when the file is unreadable, of another key or of other shapes."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["meta"]["key"] != key:
        raise ValueError(f"holds key {saved['meta']['key'][:16]}..., expected {key[:16]}...")
    model = AgreementModel(saved["meta"]["channels"], saved["meta"]["text_dim"], AgreementConfig(**saved["meta"]["config"]))
    model.load_state_dict(saved["state"])
    model.eval().requires_grad_(False)
    model.meta = {**saved["meta"], "from_cache": True, "path": str(path)}
    return model


@torch.no_grad()
def _embed(model: AgreementModel, images: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if images.shape[1] != model.channels or pooled.shape[1] != model.text_dim:
        raise ValueError(f"agreement model takes {model.channels}-channel images and {model.text_dim}-d text, got "
                         f"{images.shape[1]} channels and {pooled.shape[1]}-d text")
    img = torch.cat([model.image_embed(images[i:i + EMBED_BATCH].float().cpu())
                     for i in range(0, len(images), EMBED_BATCH)])
    txt = torch.cat([model.text_embed(pooled[i:i + EMBED_BATCH].float().cpu()) for i in range(0, len(pooled), EMBED_BATCH)])
    return img, txt


def _distinct(pooled: torch.Tensor, captions: Optional[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(index of each row's caption among the distinct ones, row index of each distinct caption)."""
    if captions is not None:
        names = {c: i for i, c in reversed(list(enumerate(captions)))}  # first row of each caption
        firsts = sorted(set(names.values()))
        position = {captions[r]: j for j, r in enumerate(firsts)}
        return np.array([position[c] for c in captions]), np.array(firsts)
    _, inverse = torch.unique(pooled, dim=0, return_inverse=True)  # equal vectors = the same caption
    _, firsts = np.unique(inverse.numpy(), return_index=True)
    return inverse.numpy(), firsts


def base_caption(caption: str) -> str:
    """The caption text before ':' ("thumbs up sign: dark skin tone" -> "thumbs up sign")."""
    return caption.split(":", 1)[0].strip()


def agreement_scores(model: AgreementModel, images: torch.Tensor, pooled: torch.Tensor, num_candidates: int = 100,
                     seed: int = 0, *, captions: Optional[Sequence[str]] = None,
                     extra_captions: Optional[Sequence[str]] = None,
                     extra_pooled: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Retrieval of each image's own caption (row i of `pooled`), as fractions.

    `top1`/`top5`: its own caption ranks first / in the first five among itself and up to
    `num_candidates - 1` other distinct captions of this evaluation set, drawn per image from `seed`;
    `chance`/`chance_top5` those of a random ranking (1/num_candidates when the set has enough captions).
    With `captions` (the texts of `pooled`), also `tone_top1`/`tone_chance` over the `tone_images`
    images whose base (`base_caption`) has other captions among this set's and `extra_captions` (texts
    only, e.g. the train split's, with their `extra_pooled`): the own caption against those alone.
    """
    _check_pairs(images, pooled, "agreement_scores", captions)
    if num_candidates < 2:
        raise ValueError(f"agreement_scores: num_candidates must be >= 2, got {num_candidates}")
    if (extra_captions is None) != (extra_pooled is None) or (
            extra_captions is not None and len(extra_captions) != len(extra_pooled)):
        raise ValueError("agreement_scores: extra_captions and extra_pooled go together, one per row "
                         f"(got {None if extra_captions is None else len(extra_captions)} captions and "
                         f"{None if extra_pooled is None else len(extra_pooled)} vectors)")
    if extra_captions is not None and captions is None:
        raise ValueError("agreement_scores: extra_captions need the evaluation set's captions too")
    img, txt = _embed(model, images, pooled)
    own, firsts = _distinct(pooled, captions)
    if len(firsts) < 2:
        raise ValueError("agreement_scores: the evaluation set has one distinct caption; retrieval needs two or more")
    sims = img @ txt[firsts].T  # (N, U): each image against each distinct caption
    rng = np.random.default_rng(seed)
    k = min(num_candidates - 1, len(firsts) - 1)  # distractors per image
    ranks, sizes = [], []
    for i in range(len(img)):
        others = np.delete(np.arange(len(firsts)), own[i])
        drawn = rng.choice(others, size=k, replace=False)
        ranks.append(int((sims[i, drawn] >= sims[i, own[i]]).sum()))  # ties count against the image
        sizes.append(k + 1)
    ranks, sizes = np.array(ranks), np.array(sizes)
    out = {"top1": float((ranks < 1).mean()), "top5": float((ranks < 5).mean()), "chance": float((1 / sizes).mean()),
           "chance_top5": float((np.minimum(5, sizes) / sizes).mean()), "candidates": float(sizes.mean()),
           "images": float(len(img))}
    if captions is not None:
        out.update(_tone_scores(model, img, list(captions), pooled, extra_captions, extra_pooled))
    return out


def _tone_scores(model: AgreementModel, img: torch.Tensor, captions: list[str], pooled: torch.Tensor,
                 extra_captions: Optional[Sequence[str]], extra_pooled: Optional[torch.Tensor]) -> dict[str, float]:
    """`tone_top1` of `agreement_scores`: own caption against the same base's other captions only."""
    pool: dict[str, torch.Tensor] = {}
    for c, p in zip([*captions, *(extra_captions or [])],
                    [*pooled, *(extra_pooled if extra_pooled is not None else [])]):
        pool.setdefault(c, p)
    by_base: dict[str, list[str]] = {}
    for c in pool:
        by_base.setdefault(base_caption(c), []).append(c)
    names = list(pool)
    with torch.no_grad():
        txt = model.text_embed(torch.stack([pool[c] for c in names]).float())
    index = {c: j for j, c in enumerate(names)}
    hits, chance = [], []
    for i, c in enumerate(captions):
        rivals = [index[r] for r in by_base[base_caption(c)] if r != c]
        if rivals:
            s = img[i] @ txt.T  # (P,)
            hits.append(bool((s[rivals] < s[index[c]]).all()))
            chance.append(1 / (len(rivals) + 1))
    out = {"tone_images": float(len(hits))}
    if hits:
        out.update(tone_top1=float(np.mean(hits)), tone_chance=float(np.mean(chance)))
    return out


def agreement_report(model: AgreementModel, generated: torch.Tensor, pooled_prompts: torch.Tensor,
                     real_test_images: torch.Tensor, pooled_test: torch.Tensor, seed: int, *,
                     null_images: Optional[torch.Tensor] = None, prompt_captions: Optional[Sequence[str]] = None,
                     test_captions: Optional[Sequence[str]] = None, extra_captions: Optional[Sequence[str]] = None,
                     extra_pooled: Optional[torch.Tensor] = None,
                     num_candidates: int = 100) -> dict[str, dict[str, float]]:
    """`agreement_scores` of the generated images (row i drawn from prompt i), with the range to read it in:

    - `ceiling`: the real test images with their own captions (what the metric gives real data);
    - `floor_shuffled`: the same generated images against the prompts in a seeded random order (what
      a model that ignores its prompt would get);
    - `floor_null` (when `null_images` are given, row i drawn from the null prompt, e.g. with prompt
      i's noise): those images against the prompts.
    The captions (`prompt_captions`, `test_captions`) add the tone scores.
    """
    _check_pairs(generated, pooled_prompts, "agreement_report (generated)", prompt_captions)

    def score(images: torch.Tensor, pooled: torch.Tensor, captions: Optional[Sequence[str]]) -> dict[str, float]:
        extra = dict(extra_captions=extra_captions, extra_pooled=extra_pooled) if captions is not None else {}
        return agreement_scores(model, images, pooled, num_candidates, seed, captions=captions, **extra)

    report = {"generated": score(generated, pooled_prompts, prompt_captions),
              "ceiling": score(real_test_images, pooled_test, test_captions)}
    perm = np.random.default_rng(seed).permutation(len(generated))
    shuffled = None if prompt_captions is None else [prompt_captions[j] for j in perm]
    report["floor_shuffled"] = score(generated, pooled_prompts[torch.from_numpy(perm)], shuffled)
    if null_images is not None:
        if len(null_images) != len(pooled_prompts):
            raise ValueError(f"agreement_report: {len(null_images)} null-prompt images but {len(pooled_prompts)} "
                             "prompts (row i of the null images pairs with prompt i)")
        report["floor_null"] = score(null_images, pooled_prompts, prompt_captions)
    return report
