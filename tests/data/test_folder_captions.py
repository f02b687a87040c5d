"""Captioned image folders: a caption file per image or a captions.csv / captions.jsonl manifest, through shards and back."""

import io
import json

import pytest
from PIL import Image

from ul_pipeline.data.loader import iter_split
from ul_pipeline.data.manifest import read_manifest
from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources import ImageFolderSource, build_source

SHARDING = dict(shard_size=4, val_size=2, seed=0, resolution=16, channels=3, num_classes=10)
CAPTIONS = {"red/a.png": "a red square", "red/b.jpg": "a dark red square, café style",  # non-ASCII on purpose
            "blue/c.png": "a blue square", "blue/deep/d.png": "a deep blue square", "blue/e.png": "a pale blue square"}
COLOURS = {"red/a.png": (250, 0, 0), "red/b.jpg": (120, 0, 0), "blue/c.png": (0, 0, 250),
           "blue/deep/d.png": (0, 0, 90), "blue/e.png": (150, 150, 255)}


def _image(name: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 24), COLOURS[name]).save(buf, format="JPEG" if name.endswith(".jpg") else "PNG")
    return buf.getvalue()


def _folder(root, layout: str, flat: bool = False):
    """The five images, in class sub-folders (or flat), captioned in `layout`: 'files' | 'csv' | 'jsonl' | 'none'."""
    names = {n: (n.rsplit("/", 1)[-1] if flat else n) for n in CAPTIONS}
    for n, path in names.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(_image(n))
        if layout == "files":
            (root / path).with_suffix(".txt").write_text(CAPTIONS[n] + "\n", encoding="utf-8")
    (root / "notes.txt").write_text("not a caption: no image is called notes")
    if layout == "csv":
        lines = ["file,caption", *(f'{path},"{CAPTIONS[n]}"' for n, path in names.items())]
        (root / "captions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if layout == "jsonl":
        rows = [json.dumps({"file": path, "caption": CAPTIONS[n]}, ensure_ascii=False) for n, path in names.items()]
        (root / "captions.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {path.rsplit(".", 1)[0]: CAPTIONS[n] for n, path in names.items()}


@pytest.mark.parametrize("layout", ["files", "csv", "jsonl"])
def test_captioned_folder_round_trips_through_shards(tmp_path, layout):
    want = _folder(tmp_path / "imgs", layout)
    src = build_source("image_folder", str(tmp_path / "imgs"), resolution=16, channels=3)
    assert src.classes == ["blue", "red"] and len(src) == 5
    m = write_shards(src, str(tmp_path / "s"), **SHARDING)
    assert read_manifest(m.url).captions
    got = {s.key: (s.caption, s.label, s.image) for split in ("train", "val") for s in iter_split(m.url, split)}
    assert {k: c for k, (c, _, _) in got.items()} == {k.replace("/", "-", 1).replace("/", "_"): c for k, c in want.items()}
    assert got["red-b"][0] == "a dark red square, café style" and got["red-b"][1] == 1  # UTF-8 kept, trailing \n not
    assert got["blue-deep_d"][2][2].mean() > 60 > got["blue-deep_d"][2][0].mean()  # the image that caption names


def test_flat_captioned_folder(tmp_path):
    want = _folder(tmp_path / "flat", "jsonl", flat=True)
    src = ImageFolderSource(str(tmp_path / "flat"), resolution=16, channels=3)
    samples = {s.key: s for s in src}
    assert {k: s.caption for k, s in samples.items()} == want and {s.label for s in samples.values()} == {0}
    m = write_shards(src, str(tmp_path / "s"), **SHARDING)
    assert read_manifest(m.url).captions and m.num_samples("train") + m.num_samples("val") == 5


def test_uncaptioned_folder_stays_uncaptioned(tmp_path):
    _folder(tmp_path / "imgs", "none")
    assert all(s.caption is None for s in ImageFolderSource(str(tmp_path / "imgs"), resolution=16, channels=3))
    _folder(tmp_path / "flat", "none", flat=True)
    with pytest.raises(ValueError, match="no class sub-folders .*needs captions"):
        ImageFolderSource(str(tmp_path / "flat"), resolution=16, channels=3)


def _expect(root, match):
    with pytest.raises(ValueError, match=match):
        ImageFolderSource(str(root), resolution=16, channels=3)


def test_caption_file_errors_name_the_file(tmp_path):
    root = tmp_path / "imgs"
    _folder(root, "files")
    (root / "blue" / "e.txt").unlink()
    _expect(root, r"blue/e\.png has no caption file .*blue/e\.txt \(1 of 5")
    (root / "blue" / "e.txt").write_text("  \n")
    _expect(root, r"caption file .*blue/e\.txt is empty")
    (root / "blue" / "e.txt").write_text("\u200b\x00 \ufeff")  # zero-width space, NUL, BOM: nothing to read
    _expect(root, r"caption file .*blue/e\.txt is empty \(or only invisible characters\)")
    (root / "blue" / "e.txt").write_bytes("pâle".encode("latin-1"))
    _expect(root, r"blue/e\.txt is not UTF-8")
    (root / "blue" / "e.txt").write_text("a pale blue square")
    (root / "captions.csv").write_text("file,caption\nred/a.png,red\n")
    _expect(root, "use one layout")


def test_manifest_errors_name_the_file(tmp_path):
    root = tmp_path / "imgs"
    _folder(root, "csv")
    csv_path = root / "captions.csv"
    good = csv_path.read_text(encoding="utf-8")
    csv_path.write_text(good + "red/gone.png,a square that is not there\n", encoding="utf-8")
    _expect(root, r"captions\.csv line 7 names 'red/gone\.png', which is not an image")
    csv_path.write_text(good.replace('"a blue square"', '""'), encoding="utf-8")
    _expect(root, r"captions\.csv line \d: the caption of 'blue/c\.png' is empty")
    csv_path.write_text("\n".join(good.splitlines()[:-1]) + "\n", encoding="utf-8")
    _expect(root, r"1 images have no caption in .*captions\.csv \(first: .*blue/e\.png\)")
    csv_path.write_text(good + "./red/a.png,again\n", encoding="utf-8")
    _expect(root, r"names './red/a\.png' a second time")
    csv_path.write_bytes(good.replace("café", "caf\xe9").encode("latin-1"))
    _expect(root, r"captions\.csv is not UTF-8")
    csv_path.write_text(good.replace("file,caption", "path,text"), encoding="utf-8")
    _expect(root, r"captions\.csv needs a header row with 'file' and 'caption'")
    (root / "captions.jsonl").write_text("{}\n")
    _expect(root, "both .*captions.csv and .*captions.jsonl")
    csv_path.unlink()
    (root / "captions.jsonl").write_text('{"file": "red/a.png", "caption": "x"}\nnot json\n')
    _expect(root, r"captions\.jsonl line 2 is not JSON")
