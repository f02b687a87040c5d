"""Captioned images: Twemoji from the npm package `emoji-datasource-twitter@16.0.0`, read from its tarball.

The package (61.7 MB; art by Twitter and contributors, CC-BY 4.0: credit it; emoji.json MIT) holds
64x64 RGBA PNGs under `package/img/twitter/64/` and their names in `package/emoji.json`: 1,911
base emoji and 1,875 skin-tone variants. `ul-pipeline fetch-assets emoji` fetches it once (`npm pack`) into
`~/.cache/ul-pipeline/` (or `$UL_CACHE_DIR`); nothing is downloaded at run time.

A sample is one PNG composited on a fixed white background and resized to the configured
resolution (antialiased bicubic); its caption is the lowercased name, with the tones of a variant
after a colon ("thumbs up sign: medium skin tone"); its label is the category (10, sorted by name).
Order: emoji by `sort_order`, each base followed by its variants (sorted by tone code).
The split (`split_indices`) keeps every base emoji in train and holds out, for each emoji with skin
tones, one seeded (emoji, tone) variant: held-out prompts whose words were all seen in training,
never in that combination.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from ul_pipeline.data.codecs import fit_image, pil_to_array
from ul_pipeline.data.sample import Sample, sanitize_key
from ul_pipeline.data.storage import StorageOptions, url_to_fs

EMOJI_PACKAGE = "emoji-datasource-twitter@16.0.0"
EMOJI_TARBALL = "emoji-datasource-twitter-16.0.0.tgz"  # what `npm pack emoji-datasource-twitter@16.0.0` writes
IMAGE_DIR = "package/img/twitter/64/"
BACKGROUND = (255, 255, 255)  # the fixed background under the transparent PNGs
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}  # Fitzpatrick modifiers (Unicode names)


def cache_dir() -> Path:
    """Where setup puts downloaded data: $UL_CACHE_DIR, else ~/.cache/ul-pipeline."""
    return Path(os.environ.get("UL_CACHE_DIR") or Path.home() / ".cache" / "ul-pipeline")


def tone_caption(name: str, tones: Optional[str] = None) -> str:
    """'thumbs up sign' + '1F3FD' -> 'thumbs up sign: medium skin tone' (two people: both tones, comma-separated)."""
    name = name.lower()
    if not tones:
        return name
    return f"{name}: " + ", ".join(SKIN_TONES[t] for t in tones.upper().split("-"))


def read_package(url: Optional[str], storage_options: StorageOptions = None) -> tuple[list[dict], dict[str, bytes]]:
    """(emoji.json entries, {png name: bytes}) of the npm tarball at `url` (a .tgz, or a folder holding
    EMOJI_TARBALL; None = the setup cache)."""
    url = url or str(cache_dir())
    if not url.endswith((".tgz", ".tar.gz")):
        url = f"{url.rstrip('/')}/{EMOJI_TARBALL}"
    fs, path = url_to_fs(url, storage_options)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"emoji source: {url} not found; run `ul-pipeline fetch-assets emoji` once (it fetches "
                                f"{EMOJI_PACKAGE} with `npm pack` into {cache_dir()}), or point data.uri at "
                                "the .tgz") from None
    entries, pngs = None, {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if member.name == "package/emoji.json":
                    entries = json.loads(tar.extractfile(member).read())
                elif member.name.startswith(IMAGE_DIR) and member.name.endswith(".png"):
                    pngs[member.name[len(IMAGE_DIR):]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise ValueError(f"emoji source {url}: corrupt tarball ({e}); delete it and run `ul-pipeline fetch-assets emoji`") from None
    if entries is None:
        raise ValueError(f"emoji source {url}: no package/emoji.json; not the {EMOJI_PACKAGE} tarball")
    return entries, pngs


class EmojiSource:
    """Twemoji as captioned samples (see the module docstring); indexable, decoded on access."""

    def __init__(self, url: Optional[str] = None, *, resolution: int = 32, channels: int = 3,
                 storage_options: StorageOptions = None):
        entries, self.pngs = read_package(url, storage_options)
        self.resolution, self.channels, self.url = resolution, channels, url or str(cache_dir())
        self.categories = sorted({e["category"] for e in entries})
        # items: (png name, caption, label, unified); groups: [base index, its variants' indices]
        self.items: list[tuple[str, str, int, str]] = []
        self.groups: list[list[int]] = []
        for e in sorted(entries, key=lambda e: e["sort_order"]):
            if not e.get("has_img_twitter"):
                continue
            label, name = self.categories.index(e["category"]), e.get("name") or e["short_name"].replace("_", " ")
            group = [len(self.items)]
            self.items.append((e["image"], tone_caption(name), label, e["unified"]))
            for tones, v in sorted((e.get("skin_variations") or {}).items()):
                if v.get("has_img_twitter"):
                    group.append(len(self.items))
                    self.items.append((v["image"], tone_caption(name, tones), label, v["unified"]))
            self.groups.append(group)
        missing = [png for png, *_ in self.items if png not in self.pngs]
        if missing:
            raise ValueError(f"emoji source {self.url}: emoji.json names {len(missing)} PNGs the tarball lacks "
                             f"(first: {IMAGE_DIR}{missing[0]})")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        png, caption, label, unified = self.items[i]
        with Image.open(io.BytesIO(self.pngs[png])) as img:
            rgba = img.convert("RGBA")
        size = [rgba.height, rgba.width]
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
        image = pil_to_array(fit_image(rgb, self.resolution), self.channels)
        info = {"source": "emoji", "image": png, "category": self.categories[label], "original_size": size}
        return Sample(sanitize_key(f"emoji-{unified.lower()}"), image, label, info, caption)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def split_indices(self, num_samples: int, seed: int) -> dict[str, np.ndarray]:
        """Every base emoji in train; per emoji with skin tones (among the first `num_samples` items) one
        seeded variant in val. Both splits seeded-permuted (the shard writer takes this over val_size)."""
        rng = np.random.default_rng(seed)
        val = []
        for group in self.groups:
            variants = [i for i in group[1:] if i < num_samples]
            if variants:
                val.append(variants[int(rng.integers(len(variants)))])
        held = set(val)
        train = np.array([i for i in range(num_samples) if i not in held], dtype=np.int64)
        return {"val": rng.permutation(np.array(val, dtype=np.int64)), "train": rng.permutation(train)}
