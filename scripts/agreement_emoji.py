"""The agreement metric's own range on the emoji split: fit on the 3,463 train images, score the 323 held out.

    python scripts/agreement_emoji.py [--uri TARBALL] [--cache-dir DIR] [--seed 0] [--json OUT]

Prints (and with --json writes) the fit time and the scores of the real held-out images with their own
captions (the ceiling a generator can reach) and against shuffled captions (the floor of a generator that
ignores its prompt); `tone_top1` ranks each image's caption among the same emoji's other skin tones only,
the train split's captions (texts only) serving as those rivals. Needs the setup cache (scripts/setup.sh).
Run on 1 CPU thread (OMP_NUM_THREADS=1); the fitted model is cached in --cache-dir (default: the setup
cache's `agreement/`), so a second run only scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ul_pipeline.data.sources.emoji import EmojiSource, cache_dir  # noqa: E402
from ul_pipeline.evaluation.agreement import agreement_report, fit_agreement_model  # noqa: E402
from ul_pipeline.text import TextEncoder  # noqa: E402


def emoji_split(uri, resolution: int, seed: int, encoder: TextEncoder) -> dict[str, dict]:
    """{'train' | 'val': {images (N, 3, R, R) in [-1, 1], captions, pooled (N, 384)}} of the emoji source's split."""
    src = EmojiSource(uri, resolution=resolution, channels=3)
    out = {}
    for split, indices in src.split_indices(len(src), seed).items():
        samples = [src[int(i)] for i in indices]
        images = torch.from_numpy(np.stack([s.image for s in samples])).float() / 127.5 - 1
        captions = [s.caption for s in samples]
        out[split] = {"images": images, "captions": captions, "pooled": encoder.encode(captions).pooled}
    return out


def emoji_agreement_range(uri=None, *, resolution: int = 32, seed: int = 0, cache: Path | None = None) -> dict:
    """Fit time, ceiling and shuffled floor of the agreement metric on the emoji split (see the module docstring)."""
    encoder = TextEncoder()
    data = emoji_split(uri, resolution, seed, encoder)
    train, val = data["train"], data["val"]
    start = time.perf_counter()
    model = fit_agreement_model(train["images"], train["pooled"], seed, cache_dir=cache,
                                text_encoder_sha256=encoder.sha256)
    seconds = time.perf_counter() - start
    report = agreement_report(model, val["images"], val["pooled"], val["images"], val["pooled"], seed,
                              prompt_captions=val["captions"], test_captions=val["captions"],
                              extra_captions=train["captions"], extra_pooled=train["pooled"])
    return {"num_train": len(train["images"]), "num_val": len(val["images"]), "threads": torch.get_num_threads(),
            "fit_seconds": model.meta["fit_seconds"], "from_cache": model.meta["from_cache"],
            "seconds_this_call": seconds, "ceiling": report["ceiling"], "floor_shuffled": report["floor_shuffled"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--uri", default=None, help="the emoji tarball (default: the setup cache)")
    p.add_argument("--cache-dir", type=Path, default=cache_dir() / "agreement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    result = emoji_agreement_range(args.uri, seed=args.seed, cache=args.cache_dir)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
