"""Text features in the latent store: encoded once, keyed by the text encoder's weights, readable by other tools."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources import EmojiSource
from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.latents.store import LatentStoreError
from ul_pipeline.latents.text_features import ensure_text_features, open_text_features, text_group_name
from ul_pipeline.text.encoder import TextFeatures

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "emoji_mini.tgz"
META = {"encoder_sha256": "e" * 64, "stage1_config": {"preset": "toy"}, "logsnr_0": 5.0}


class ToyTextEncoder:
    """Stands in for TextEncoder: one token per character (+ 2), features from character codes; counts calls."""

    name, dim = "toy", 8

    def __init__(self, sha256: str = "a" * 64):
        self.sha256, self.calls = sha256, 0

    def num_tokens(self, captions):
        return max(len(c) for c in captions) + 2

    def encode(self, captions, length=None):
        self.calls += 1
        length = length or self.num_tokens(captions)
        mask = torch.zeros(len(captions), length, dtype=torch.bool)
        states = torch.zeros(len(captions), length, self.dim)
        for i, c in enumerate(captions):
            mask[i, :len(c) + 2] = True
            codes = torch.tensor([0, *map(ord, c), 1], dtype=torch.float32)
            states[i, :len(c) + 2] = torch.stack([codes / (k + 1) for k in range(self.dim)], dim=1)
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return TextFeatures(states, mask, F.normalize(pooled, dim=1))


def toy_image_encoder(x):  # uint8 (B, 3, 32, 32) -> (B, 2, 4, 4)
    return F.avg_pool2d(x.float() / 127.5 - 1.0, 8)[:, :2]


@pytest.fixture()
def store(tmp_path):
    shards = str(tmp_path / "shards")
    write_shards(EmojiSource(str(FIXTURE)), shards, shard_size=8, val_size=0, seed=0, resolution=32, channels=3,
                 num_classes=10)
    url = str(tmp_path / "latents.zarr")
    extract_latents(shards, "train", url, toy_image_encoder, META, block_size=8, batch_size=4)
    return shards, url


def test_text_features_are_stored_once_beside_the_latents(store):
    shards, url = store
    enc = ToyTextEncoder()
    g = ensure_text_features(url, shards, enc, batch_size=3)
    calls = enc.calls
    assert calls > 0 and g.attrs["ul_text"]["complete"] and g.attrs["ul_text"]["text_encoder_sha256"] == enc.sha256
    n, t = 17, g.attrs["ul_text"]["tokens"]
    assert g["token_states"].shape == (n, t, 8) and g["mask"].shape == (n, t) and g["pooled"].shape == (n, 8)
    import zarr

    keys = zarr.open_group(url, mode="r")["keys"][:].tolist()
    captions = g["captions"][:].tolist()
    assert keys[captions.index("thumbs up sign")] == "emoji-1f44d"  # rows follow the store's keys
    want = enc.encode(captions, t)
    assert np.array_equal(g["token_states"][:], want.token_states.numpy()) and np.array_equal(g["mask"][:], want.mask)
    ensure_text_features(url, shards, enc)
    assert enc.calls == calls + 1  # the second call read the cache (the +1 is our own check above)


def test_another_text_encoder_never_mixes_in(store):
    shards, url = store
    a, b = ToyTextEncoder("a" * 64), ToyTextEncoder("b" * 64)
    ensure_text_features(url, shards, a)
    with pytest.raises(LatentStoreError, match="no complete text features of text encoder bbbb"):
        open_text_features(url, b.sha256)
    gb = ensure_text_features(url, shards, b)
    assert gb.path.endswith(text_group_name(b.sha256)) and open_text_features(url, a.sha256).path != gb.path


def test_an_interrupted_write_is_redone(store):
    shards, url = store
    enc = ToyTextEncoder()

    def boom(*a, **k):
        raise RuntimeError("killed")
    real = enc.encode
    enc.encode = boom
    with pytest.raises(RuntimeError):
        ensure_text_features(url, shards, enc)
    with pytest.raises(LatentStoreError):
        open_text_features(url, enc.sha256)
    enc.encode = real
    assert ensure_text_features(url, shards, enc).attrs["ul_text"]["complete"]


def test_text_features_need_the_stores_own_shards(store, tmp_path, fmnist_400_source):
    _, url = store
    other = str(tmp_path / "other")
    write_shards(fmnist_400_source, other, shard_size=150, val_size=50, seed=0, resolution=32, channels=1,
                 num_classes=10)
    with pytest.raises(LatentStoreError, match="extracted from shards"):
        ensure_text_features(url, other, ToyTextEncoder())


XARRAY_READER = textwrap.dedent("""
    import json, sys
    import xarray, zarr
    root = zarr.open_group(sys.argv[1], mode="r")
    name = "text_features/" + sorted(root["text_features"].group_keys())[0]
    ds = xarray.open_zarr(sys.argv[1], group=name, chunks=None)
    assert "ul_pipeline" not in sys.modules
    print(json.dumps({"dims": {k: list(v.dims) for k, v in ds.data_vars.items()}, "meta": ds.attrs["ul_text"],
                      "first": str(ds["captions"].values[0]), "key": str(root["keys"][0])}))
""")


def test_text_features_open_in_xarray_with_named_dimensions(store, tmp_path):
    shards, url = store
    ensure_text_features(url, shards, ToyTextEncoder())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", XARRAY_READER, url], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["dims"] == {"token_states": ["sample", "token", "feature"], "mask": ["sample", "token"],
                           "pooled": ["sample", "feature"], "captions": ["sample"]}
    assert got["meta"]["text_encoder_sha256"] == "a" * 64 and got["meta"]["complete"] is True
    assert got["key"].startswith("emoji-") and got["first"]


def test_features_another_writer_finished_while_we_waited_for_the_lock_are_not_rewritten(store, monkeypatch):
    """A review's race: the features were checked absent, then another process wrote them before our lock."""
    import contextlib

    import ul_pipeline.latents.text_features as tf

    shards, url = store
    encoder, real_lock, real_write = ToyTextEncoder(), tf.local_writer_lock, tf._write

    @contextlib.contextmanager
    def lock_after_the_other_writer(fs, path, what):
        opened = tf.open_store(url)  # the other process, done just before we got the lock
        real_write(url, None, encoder, tf.read_captions(shards, "train", opened.key_list()), opened.meta, 256, None)
        with real_lock(fs, path, what):
            yield

    writes = []
    monkeypatch.setattr(tf, "_write", lambda *a, **k: writes.append(1) or real_write(*a, **k))
    monkeypatch.setattr(tf, "local_writer_lock", lock_after_the_other_writer)
    monkeypatch.setattr(tf, "open_text_features", _absent_once(tf.open_text_features))
    tf.ensure_text_features(url, shards, encoder)
    assert writes == []  # ours found them complete under the lock and left them as they were
    assert open_text_features(url, encoder.sha256).attrs["ul_text"]["complete"]


def _absent_once(real):
    """open_text_features that reports the features absent on its first call (our look before the lock)."""
    calls = []

    def opened(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise LatentStoreError("absent (first look)")
        return real(*args, **kwargs)
    return opened
