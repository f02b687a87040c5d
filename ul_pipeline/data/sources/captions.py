"""Captions of an image folder, in one of two layouts (the folder uses one or none):

- a caption file per image: `foo.png` + `foo.txt` beside it (UTF-8; surrounding whitespace dropped);
- a manifest at the folder's top, `captions.csv` (a header row with `file` and `caption` columns) or
  `captions.jsonl` (one `{"file": ..., "caption": ...}` object a line); `file` is the image's path
  relative to the folder (`cats/01.png`, or `01.png` in a flat folder).

A `.txt` with no image of its stem beside it is not a caption (notes stay notes). Every image must
then have a caption; errors name the file: an image without one, an empty caption, a file that is not
UTF-8, a manifest row naming an image the folder lacks (or naming one twice), both layouts at once.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from typing import Any, Optional

MANIFESTS = ("captions.csv", "captions.jsonl")


def _decode(data: bytes, path: str, what: str) -> str:
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark (spreadsheets write one) is dropped
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: {path} is not UTF-8 ({e})") from None


def _manifest_rows(fs: Any, path: str, what: str) -> list[tuple[str, str, int]]:
    """[(file, caption, line)] of a captions.csv / captions.jsonl."""
    text = _decode(fs.cat_file(path), path, what)
    rows = []
    if path.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not {"file", "caption"} <= set(reader.fieldnames or []):
            raise ValueError(f"{what}: {path} needs a header row with 'file' and 'caption' columns "
                             f"(got {reader.fieldnames})")
        for row in reader:
            rows.append((row["file"] or "", row["caption"] or "", reader.line_num))
        return rows
    for line_num, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: {path} line {line_num} is not JSON ({e})") from None
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not isinstance(row.get("caption"), str):
            raise ValueError(f"{what}: {path} line {line_num} needs string 'file' and 'caption' fields")
        rows.append((row["file"], row["caption"], line_num))
    return rows


def _from_manifest(fs: Any, root: str, path: str, images: list[str], what: str) -> list[str]:
    relative = {p[len(root) + 1:]: i for i, p in enumerate(images)}
    captions: list[Optional[str]] = [None] * len(images)
    for file, caption, line in _manifest_rows(fs, path, what):
        name = file.strip()
        name = (name[2:] if name.startswith("./") else name).lstrip("/")
        if name not in relative:
            raise ValueError(f"{what}: {path} line {line} names {file!r}, which is not an image in the folder")
        if captions[relative[name]] is not None:
            raise ValueError(f"{what}: {path} line {line} names {file!r} a second time")
        if _blank(caption):
            raise ValueError(f"{what}: {path} line {line}: the caption of {file!r} is empty (or only invisible "
                             "characters)")
        captions[relative[name]] = caption.strip()
    missing = [images[i] for i, c in enumerate(captions) if c is None]
    if missing:
        raise ValueError(f"{what}: {len(missing)} images have no caption in {path} (first: {missing[0]}); "
                         "every image needs one")
    return captions  # type: ignore[return-value]


def _blank(caption: str) -> bool:
    """No character a reader (or the tokenizer) would see: whitespace, controls (NUL, ...), format characters
    (zero-width space, ...)."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in caption)


def folder_captions(fs: Any, root: str, images: list[str], what: str) -> Optional[list[str]]:
    """The caption of each image (paths on `fs` under `root`, in order), or None when the folder has none."""
    manifests = [f"{root}/{name}" for name in MANIFESTS if fs.isfile(f"{root}/{name}")]
    texts = {p for p in fs.find(root) if p.lower().endswith(".txt")}
    sidecars = [f"{p.rsplit('.', 1)[0]}.txt" for p in images]
    have = [s in texts for s in sidecars]
    if len(manifests) > 1:
        raise ValueError(f"{what}: both {manifests[0]} and {manifests[1]}; keep one")
    if manifests and any(have):
        raise ValueError(f"{what}: captions in {manifests[0]} and in caption files ({sidecars[have.index(True)]}, "
                         "...); use one layout")
    if manifests:
        return _from_manifest(fs, root, manifests[0], images, what)
    if not any(have):
        return None
    if not all(have):
        i = have.index(False)
        raise ValueError(f"{what}: {images[i]} has no caption file {sidecars[i]} ({have.count(False)} of "
                         f"{len(images)} images lack one); every image needs one")
    data = fs.cat(sidecars)  # {path: bytes}, one batched read
    captions = []
    for path in sidecars:
        caption = _decode(data[path], path, what).strip()
        if _blank(caption):
            raise ValueError(f"{what}: caption file {path} is empty (or only invisible characters)")
        captions.append(caption)
    return captions
