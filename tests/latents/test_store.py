"""Latent store and extraction: self-describing Zarr (plain zarr reads it), resumable, refuses the wrong store."""

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.distributed import World
from ul_pipeline.latents.dataset import BlockReader
from ul_pipeline.latents.store import LatentStoreError, create_store, open_store
from ul_pipeline.data.loader import load_split_tensor
from ul_pipeline.data.shards import write_shards
from ul_pipeline.train.streamed import StreamedBatches

REPO = Path(__file__).resolve().parents[2]
SHARDING = dict(shard_size=150, val_size=50, seed=0, resolution=32, channels=1, num_classes=10)
META = {"encoder_sha256": "e" * 64, "stage1_config": {"preset": "toy", "c_lf": 1.5}, "logsnr_0": 5.0}
EXTRACT = dict(block_size=64, batch_size=32)  # 350 train samples -> 6 blocks (the last one 30)


def toy_encoder(x: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for the Stage-1 encoder: uint8 (B, 1, 32, 32) -> (B, 4, 8, 8)."""
    p = F.avg_pool2d(x.float() / 127.5 - 1.0, 4)
    return torch.cat([p, p.square(), -p, 0.5 * p + 0.1], dim=1)


class Boom(RuntimeError):
    pass


def failing_encoder(after_batches: int):
    calls = {"n": 0}

    def encode(x):
        calls["n"] += 1
        if calls["n"] > after_batches:
            raise Boom("encoder crashed")
        return toy_encoder(x)

    return encode


@pytest.fixture(scope="module")
def shards(tmp_path_factory, fmnist_400_source):
    url = str(tmp_path_factory.mktemp("shards") / "fmnist")
    write_shards(fmnist_400_source, url, **SHARDING)
    return url


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory, shards):
    """An uninterrupted extraction of the train split."""
    return extract_latents(shards, "train", str(tmp_path_factory.mktemp("ref") / "latents.zarr"), toy_encoder,
                           META, **EXTRACT)


def assert_same_store(a, b):
    assert np.array_equal(a.z_clean[:], b.z_clean[:])
    assert np.array_equal(a.labels[:], b.labels[:])
    assert a.key_list() == b.key_list()
    strip = lambda m: {k: v for k, v in m.items() if k not in ("created_at", "encode_seconds", "creation_id")}  # noqa: E731
    assert strip(a.meta) == strip(b.meta)


PLAIN_ZARR_READER = textwrap.dedent("""
    import hashlib, json, sys
    import zarr
    url, options = sys.argv[1], json.loads(sys.argv[2])
    group = zarr.open_group(url, mode="r", storage_options=options)
    z, labels, keys = group["z_clean"][:], group["labels"][:], group["keys"][:]
    assert "ul_pipeline" not in sys.modules, "reading the store must not need ul_pipeline"
    print(json.dumps({"ul": group.attrs["ul"], "z_sha256": hashlib.sha256(z.tobytes()).hexdigest(),
                      "shape": list(z.shape), "dtype": str(z.dtype), "labels": labels.tolist(),
                      "keys": [str(k) for k in keys],
                      "consolidated": group.metadata.consolidated_metadata is not None}))
""")


def read_with_plain_zarr(url: str, storage_options, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", PLAIN_ZARR_READER, url, json.dumps(storage_options)],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check_plain_read(store, got: dict, images: torch.Tensor, labels: torch.Tensor, keys: list[str]):
    z = toy_encoder(images).numpy()
    assert got["shape"] == [350, 4, 8, 8] and got["dtype"] == "float32" and got["consolidated"]
    assert got["z_sha256"] == hashlib.sha256(z.tobytes()).hexdigest()  # exactly the encoder's output
    assert got["labels"] == labels.tolist() and got["keys"] == keys
    ul = got["ul"]
    assert ul["complete"] is True and ul["num_samples"] == 350 and ul["latent_shape"] == [4, 8, 8]
    assert ul["encoder_sha256"] == META["encoder_sha256"] and ul["stage1_config"] == META["stage1_config"]
    assert ul["logsnr_0"] == 5.0 and ul["split"] == "train" and ul["format_version"] == 1
    assert len(ul["dataset_manifest_sha256"]) == 64 and "T" in ul["created_at"]
    z64 = z.astype(np.float64)
    assert np.allclose(ul["channel_mean"], z64.mean(axis=(0, 2, 3)), atol=1e-12)
    assert np.allclose(ul["channel_std"], z64.std(axis=(0, 2, 3)), atol=1e-12)
    assert ul == store.meta


def test_store_round_trip_local_read_by_plain_zarr(tmp_path, shards, reference_store):
    images, labels, keys = load_split_tensor(shards, "train")
    got = read_with_plain_zarr(reference_store.url, None, tmp_path)
    check_plain_read(reference_store, got, images, labels, keys)
    assert reference_store.meta["dataset_manifest_sha256"] != ""


def test_store_round_trip_s3_read_by_plain_zarr(tmp_path, s3_server, fmnist_400_source):
    so = s3_server.storage_options
    shard_url, store_url = s3_server.url("shards"), s3_server.url("latents.zarr")
    manifest = write_shards(fmnist_400_source, shard_url, storage_options=so, **SHARDING)
    store = extract_latents(shard_url, "train", store_url, toy_encoder, META, storage_options=so, **EXTRACT)
    assert store.meta["dataset_manifest_sha256"] == manifest.sha256
    images, labels, keys = load_split_tensor(shard_url, "train", storage_options=so)
    check_plain_read(store, read_with_plain_zarr(store_url, so, tmp_path), images, labels, keys)

    opened = open_store(store_url, META["encoder_sha256"], storage_options=so)
    z, y = next(block_stream(opened, 50)(0))
    assert z.shape == (50, 4, 8, 8) and z.dtype == torch.float32 and y.dtype == torch.int64
    forked = block_stream(opened, 16, workers=2)(0)  # workers must not reuse the parent's S3 client
    assert all(z.shape == (16, 4, 8, 8) for z, _ in (b for _, b in zip(range(4), forked)))
    del forked
    gc.collect()  # stop the workers here (torch stops them slowly if collected later in another thread)
    with pytest.raises(LatentStoreError, match=rf"{store_url} was written by encoder e+, not the expected encoder f+"):
        open_store(store_url, "f" * 64, storage_options=so)
    bad = {**so, "secret": "wrong", "skip_instance_cache": True}
    with pytest.raises(PermissionError):
        open_store(store_url, storage_options=bad)


def test_interrupted_extraction_resumes_to_the_same_store(tmp_path, shards, reference_store):
    url = str(tmp_path / "latents.zarr")
    progress = []
    with pytest.raises(Boom):  # 2 batches per block: dies inside block 3 after blocks 0-2 are written
        extract_latents(shards, "train", url, failing_encoder(7), META, progress=lambda d, n: progress.append(d), **EXTRACT)
    assert progress == [64, 128, 192]
    partial = open_store(url, allow_incomplete=True)
    assert partial.meta["complete"] is False and partial.done_blocks().tolist() == [1, 1, 1, 0, 0, 0]
    with pytest.raises(LatentStoreError, match=rf"latent store {url} is incomplete \(complete=False, 3/6 blocks"):
        open_store(url, META["encoder_sha256"])
    with pytest.raises(LatentStoreError, match=rf"{url} holds latents of encoder e+, not f+"):
        extract_latents(shards, "train", url, toy_encoder, {**META, "encoder_sha256": "f" * 64}, **EXTRACT)

    calls = []
    store = extract_latents(shards, "train", url, lambda x: calls.append(len(x)) or toy_encoder(x), META, **EXTRACT)
    assert sum(calls) == 350 - 192  # only the missing blocks were encoded
    assert_same_store(store, reference_store)
    assert_same_store(open_store(url, META["encoder_sha256"]), reference_store)

    def must_not_run(x):
        raise AssertionError("a complete store must not be re-encoded")

    assert extract_latents(shards, "train", url, must_not_run, META, **EXTRACT).meta == store.meta  # no-op
    with pytest.raises(LatentStoreError, match=rf"{url} holds latents of encoder e+, not f+"):
        extract_latents(shards, "train", url, toy_encoder, {**META, "encoder_sha256": "f" * 64}, **EXTRACT)
    with pytest.raises(LatentStoreError, match="block_size is 64, this extraction has 32"):
        extract_latents(shards, "train", url, toy_encoder, META, block_size=32)
    replaced = extract_latents(shards, "train", url, toy_encoder, {**META, "encoder_sha256": "f" * 64},
                               overwrite=True, **EXTRACT)
    assert open_store(url, "f" * 64).meta["encoder_sha256"] == replaced.meta["encoder_sha256"]


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [sys.argv[1]]
    from tests.latents.test_store import EXTRACT, META, toy_encoder
    from ul_pipeline.latents.extract import extract_latents
    calls = {"n": 0}
    def encode(x):
        calls["n"] += 1
        if calls["n"] == 10:  # mid-block 4, after blocks 0-3 are on disk
            os.kill(os.getpid(), signal.SIGKILL)
        return toy_encoder(x)
    extract_latents(sys.argv[3], "train", sys.argv[4], encode, META, **EXTRACT)
""")


def test_sigkilled_extraction_resumes_to_the_same_store(tmp_path, shards, reference_store):
    url = str(tmp_path / "latents.zarr")
    out = subprocess.run([sys.executable, "-c", KILLED_RUN, str(REPO), str(REPO / "tests"), shards, url],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == -signal.SIGKILL, out.stderr
    with pytest.raises(LatentStoreError, match="is incomplete"):
        open_store(url)
    assert open_store(url, allow_incomplete=True).done_blocks().tolist() == [1, 1, 1, 1, 0, 0]
    calls = []
    store = extract_latents(shards, "train", url, lambda x: calls.append(len(x)) or toy_encoder(x), META, **EXTRACT)
    assert sum(calls) == 350 - 256
    assert_same_store(store, reference_store)


def test_extraction_recreates_a_store_whose_creation_crashed(tmp_path, shards, reference_store, monkeypatch):
    """create_store writes the group and arrays, then `ul` last; a crash in between must not block re-runs."""
    import ul_pipeline.latents.store as store_module

    class CrashingClock:
        @staticmethod
        def now(tz=None):
            raise Boom("crash inside create_store, after the arrays, before the 'ul' attribute")

    url = str(tmp_path / "latents.zarr")
    with monkeypatch.context() as m:
        m.setattr(store_module, "datetime", CrashingClock)
        with pytest.raises(Boom):
            extract_latents(shards, "train", url, toy_encoder, META, **EXTRACT)
    with pytest.raises(LatentStoreError, match="zarr group without the 'ul' attribute"):
        open_store(url, allow_incomplete=True)
    with pytest.warns(RuntimeWarning, match=rf"latent store {url}: zarr group without the 'ul' attribute .* recreating"):
        store = extract_latents(shards, "train", url, toy_encoder, META, **EXTRACT)
    assert_same_store(store, reference_store)
    with pytest.raises(LatentStoreError, match=rf"{url} holds latents of encoder e+, not f+"):  # only `ul`-less
        extract_latents(shards, "train", url, toy_encoder, {**META, "encoder_sha256": "f" * 64}, **EXTRACT)


def test_create_store_checks_meta_and_refuses_to_clobber(tmp_path):
    with pytest.raises(LatentStoreError, match=r"meta lacks \['dataset_manifest_sha256', 'split'\]"):
        create_store(str(tmp_path / "a.zarr"), 10, (4, 8, 8), meta=META)
    meta = {**META, "dataset_manifest_sha256": "d" * 64, "split": "val"}
    store = create_store(str(tmp_path / "a.zarr"), 10, (4, 8, 8), "float16", 4, meta)
    assert store.z_clean.dtype == np.float16 and store.z_clean.chunks == (4, 4, 8, 8) and store.num_blocks == 3
    with pytest.raises(FileExistsError, match="a.zarr exists"):
        create_store(str(tmp_path / "a.zarr"), 10, (4, 8, 8), meta=meta)
    with pytest.raises(LatentStoreError, match="not found"):
        open_store(str(tmp_path / "missing.zarr"))


def block_stream(store, batch_size, workers=0, world=None, seed=0, shuffle_buffer=128):
    return StreamedBatches(BlockReader(store, 10), batch_size=batch_size, seed=seed, shuffle_buffer=shuffle_buffer,
                           workers=workers, world=world or World())


def test_streamed_blocks_cover_each_sample_once_per_epoch(tmp_path, shards, reference_store):
    z_all, y_all = reference_store.z_clean[:], reference_store.labels[:]
    row_of = {z_all[i].tobytes(): i for i in range(len(z_all))}
    it = block_stream(reference_store, 25, seed=3)(0)  # windows of two blocks of 64
    rows = []
    for _ in range(14):  # 350 / 25: exactly one epoch
        z, y = next(it)
        assert z.shape == (25, 4, 8, 8) and z.dtype == torch.float32 and y.dtype == torch.int64
        idx = [row_of[r.numpy().tobytes()] for r in z]
        assert np.array_equal(y.numpy(), y_all[idx])  # labels travel with their latents
        rows += idx
    assert sorted(rows) == list(range(350))
    next(it)  # and it goes on

    rank_rows = []
    for rank in (0, 1):  # 6 blocks over 2 ranks: disjoint shares
        z, _ = next(block_stream(reference_store, 90, world=World(rank, 2))(0))
        rank_rows.append({row_of[r.numpy().tobytes()] // 64 for r in z})
    assert rank_rows[0].isdisjoint(rank_rows[1])

    loader = block_stream(reference_store, 32, workers=2)(0)
    assert all(z.shape == (32, 4, 8, 8) for z, _ in (b for _, b in zip(range(4), loader)))
    del loader
    gc.collect()


XARRAY_READER = textwrap.dedent("""
    import json, sys
    import xarray
    ds = xarray.open_zarr(sys.argv[1], chunks=None)  # chunks=None: no dask needed
    assert "ul_pipeline" not in sys.modules, "reading the store must not need ul_pipeline"
    print(json.dumps({"dims": {k: list(v.dims) for k, v in ds.data_vars.items()},
                      "shapes": {k: list(v.shape) for k, v in ds.data_vars.items()},
                      "sizes": dict(ds.sizes), "ul": ds.attrs["ul"],
                      "z_mean_c": ds["z_clean"].mean(dim=("sample", "y", "x")).values.tolist(),
                      "labels": ds["labels"].values.tolist()}))
""")


def test_store_opens_in_xarray_with_named_dimensions(tmp_path, shards, reference_store):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", XARRAY_READER, reference_store.url], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["dims"]["z_clean"] == ["sample", "channel", "y", "x"]
    assert got["dims"]["labels"] == got["dims"]["keys"] == ["sample"] and got["dims"]["blocks_done"] == ["block"]
    assert got["shapes"]["z_clean"] == [350, 4, 8, 8] and got["sizes"]["block"] == 6
    assert got["ul"] == reference_store.meta and got["ul"]["complete"] is True
    assert np.allclose(got["z_mean_c"], reference_store.meta["channel_mean"], atol=1e-5)
    images, labels, _ = load_split_tensor(shards, "train")
    assert got["labels"] == labels.tolist()
