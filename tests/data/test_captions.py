"""Captions in the data path: `<key>.txt` round trips, the emoji source and its split, uncaptioned shards unchanged."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ul_pipeline.data.loader import iter_split
from ul_pipeline.data.manifest import read_manifest
from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources import ArraySource, EmojiSource, ShardSource, build_source
from ul_pipeline.data.sources.emoji import tone_caption
from ul_pipeline.data.sources.images import FASHION_MNIST_CAPTIONS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "emoji_mini.tgz"
SHARDING = dict(shard_size=150, val_size=50, seed=0, resolution=32, channels=1, num_classes=10)
EMOJI_SHARDING = dict(shard_size=8, val_size=0, seed=0, resolution=32, channels=3, num_classes=10)


def captioned(fmnist_400) -> ArraySource:
    images, labels = fmnist_400
    keys = [f"fmnist-test-{i:06d}" for i in range(len(images))]
    return ArraySource(images, labels, keys, resolution=32, channels=1, source="fashion_mnist_captions", pad_to=32,
                       captions=[FASHION_MNIST_CAPTIONS[int(y)] for y in labels])


# pinned from main before captions existed (eab6b1c): committed results depend on these shard bytes (the tars'
# sha256s, from the PNG encoder of the pinned Pillow) and on the dataset identity (the manifest file's sha256)
UNCAPTIONED_TARS = {"train-000000.tar": "62b7c92f2233de92ffb53362b666fb0f0ccead23f39ed054f4973550907ad0bc",
                    "train-000001.tar": "c04bb662f12ec053b61dc9b01b51a0abf587b850c6d1713cc10fb9ba3e02f593",
                    "train-000002.tar": "07775051ab79a764fcd875ca4884669bbd30474f93b32703a5270230387d84fd",
                    "val-000000.tar": "1a74312d89b16287b41c22b464d3481aa903e732b4eac818dc5ac54da6269380"}
UNCAPTIONED_MANIFEST = "08c1c2ea705d26cc5ffb56418e44216053460cb5d57594102d9cf4ea46873054"


def test_uncaptioned_shards_keep_their_bytes(tmp_path, fmnist_400_source):
    m = write_shards(fmnist_400_source, str(tmp_path / "s"), **SHARDING, data_sha256="d" * 64)
    assert dict(m.table.select("shard", "sha256").iter_rows()) == UNCAPTIONED_TARS
    assert not m.captions and "captions" not in m.table.columns
    assert all(s.caption is None for s in iter_split(m.url, "val"))


def test_uncaptioned_manifest_keeps_its_identity(tmp_path, fmnist_400_source):
    # The identity is the sha256 of manifest.parquet as written, and Polars writes its own version into the
    # file: a Polars upgrade gives freshly sharded data a new identity (stages then treat it as new data).
    # constraints.txt pins Polars; bump it knowingly.
    import polars as pl

    m = write_shards(fmnist_400_source, str(tmp_path / "s"), **SHARDING, data_sha256="d" * 64)
    assert m.sha256 == UNCAPTIONED_MANIFEST, (
        f"the manifest of unchanged shards hashes differently under polars {pl.__version__}: every freshly "
        "written dataset gets a new identity; if this upgrade is deliberate, re-pin here and say so in CHANGELOG")


def test_captions_round_trip_through_shards(tmp_path, fmnist_400):
    source = captioned(fmnist_400)
    m = write_shards(source, str(tmp_path / "s"), **SHARDING)
    assert read_manifest(m.url).captions
    got = {s.key: (s.caption, s.label) for split in ("train", "val") for s in iter_split(m.url, split)}
    assert len(got) == 400
    assert all(c == FASHION_MNIST_CAPTIONS[y] for c, y in got.values())
    assert got["fmnist-test-000000"][0] == "a photo of an ankle boot"  # the first test image is class 9
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "s" / "val-000000.tar").read_bytes())) as tar:
        names = tar.getnames()
        assert f"{names[0].split('.')[0]}.txt" in names  # WebDataset's `txt` member beside the png
    again = write_shards(ShardSource(m.url, resolution=32, channels=1), str(tmp_path / "again"), **SHARDING)
    assert {s.key: s.caption for split in ("train", "val") for s in iter_split(again.url, split)} == {
        k: c for k, (c, _) in got.items()}  # re-sharding keeps the captions


def test_some_captions_missing_is_refused(tmp_path, fmnist_400):
    src = captioned(fmnist_400)
    items = [src[i] for i in range(20)]
    items[7] = items[7]._replace(caption=None)
    with pytest.raises(ValueError, match="some samples have captions and others not"):
        write_shards(items, str(tmp_path / "s"), **{**SHARDING, "val_size": 5})


def test_emoji_source_reads_the_npm_layout():
    src = build_source("emoji", str(FIXTURE), resolution=32, channels=3)
    assert isinstance(src, EmojiSource) and len(src) == 20
    samples = list(src)
    caps = {s.key: s.caption for s in samples}
    assert caps["emoji-1f44d-1f3fd"] == "thumbs up sign: medium skin tone"
    assert caps["emoji-1f600"] == "grinning face"
    assert caps["emoji-1faf1-1f3fb-200d-1faf2-1f3fc"] == "handshake: light skin tone, medium-light skin tone"
    assert all(s.image.shape == (3, 32, 32) and s.image.dtype == np.uint8 for s in samples)
    assert all((s.image[:, 0, 0] == 255).all() for s in samples if s.key != "emoji-26bd")  # the white background
    assert src.categories[samples[0].label] == "Smileys & Emotion" and samples[0].info["original_size"] == [64, 64]
    by_key = {s.key: s for s in samples}
    assert by_key["emoji-1f44d-1f3fb"].image.mean() > by_key["emoji-1f44d-1f3ff"].image.mean() + 10  # the tones differ


def test_tone_captions():
    assert tone_caption("THUMBS UP SIGN", "1F3FE") == "thumbs up sign: medium-dark skin tone"
    assert tone_caption("Handshake", "1f3fb-1f3ff") == "handshake: light skin tone, dark skin tone"
    assert tone_caption("ROCKET") == "rocket"


def test_emoji_split_holds_out_one_tone_per_emoji_and_keeps_every_base():
    src = EmojiSource(str(FIXTURE))
    split = src.split_indices(len(src), seed=0)
    train, val = set(split["train"].tolist()), set(split["val"].tolist())
    assert train | val == set(range(len(src))) and not train & val
    assert all(g[0] in train for g in src.groups)  # every base emoji
    toned = [g for g in src.groups if len(g) > 1]
    assert len(val) == len(toned) == 3 and all(len(val & set(g[1:])) == 1 for g in toned)
    train_words = {w for i in train for w in src.items[i][1].replace(":", " ").replace(",", " ").split()}
    for i in val:  # every held-out prompt's words were seen in training, never in that combination
        caption = src.items[i][1]
        assert set(caption.replace(":", " ").replace(",", " ").split()) <= train_words
        assert caption not in {src.items[j][1] for j in train}
    again = src.split_indices(len(src), seed=0)
    assert all((again[k] == split[k]).all() for k in split)
    assert len({tuple(sorted(src.split_indices(len(src), seed=s)["val"].tolist())) for s in range(8)}) > 1  # seeded
    part = src.split_indices(9, seed=0)  # data.limit: the rule over the first 9 items (waving hand, 1 thumbs up)
    assert sorted([*part["train"].tolist(), *part["val"].tolist()]) == list(range(9)) and len(part["val"]) == 2


def test_emoji_shards_use_the_sources_split(tmp_path):
    m = write_shards(EmojiSource(str(FIXTURE)), str(tmp_path / "e"), **EMOJI_SHARDING)
    assert m.captions and m.num_samples("val") == 3 and m.num_samples("train") == 17
    assert int(m.table["val_size"][0]) == 3  # what was held out, not data.val_size
    assert all(":" in s.caption for s in iter_split(m.url, "val"))


def test_emoji_without_setup_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setenv("UL_CACHE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ul-pipeline fetch-assets"):
        build_source("emoji", None, resolution=32, channels=3)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs dataset-fashion-mnist")
def test_fashion_mnist_captions_source():
    src = build_source("fashion_mnist_captions", None, resolution=32, channels=1)
    plain = build_source("fashion_mnist", None, resolution=32, channels=1)
    for i in (0, 1, 60_000):
        s, p = src[i], plain[i]
        assert s.key == p.key and (s.image == p.image).all() and s.caption == FASHION_MNIST_CAPTIONS[s.label]
        assert p.caption is None and s.info["source"] == "fashion_mnist_captions"
