"""Shards: deterministic split, exact round trips (local and S3), loud failures on bad shards."""

import gc
import hashlib
import io
import re
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

from ul_pipeline.data.loader import ShardReader, iter_split, load_split_tensor
from ul_pipeline.data.manifest import MANIFEST_NAME, read_manifest, ShardError
from ul_pipeline.data.shards import iter_tar_samples, split_indices, write_shards
from ul_pipeline.data.storage import url_to_fs
from ul_pipeline.data.sources import ArraySource, ShardSource, build_source
from ul_pipeline.data.stream_plan import StreamPlan
from ul_pipeline.data.streaming import ReaderStream
from ul_pipeline.distributed import World
from ul_pipeline.train.streamed import StreamedBatches

SHARDING = dict(shard_size=150, val_size=50, seed=0, resolution=32, channels=1, num_classes=10)


def padded(images: np.ndarray) -> np.ndarray:
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))  # 28x28 -> 32x32, background 0


def key_index(keys) -> np.ndarray:
    return np.array([int(k.rsplit("-", 1)[1]) for k in keys])


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory, fmnist_400_source):
    url = str(tmp_path_factory.mktemp("shards") / "fmnist")
    return url, write_shards(fmnist_400_source, url, **SHARDING)


def test_sharding_is_deterministic_and_the_split_is_exact(tmp_path, fmnist_400_source, local_shards):
    url, manifest = local_shards
    again = write_shards(fmnist_400_source, str(tmp_path / "again"), **SHARDING)
    names = sorted(p.name for p in Path(url).iterdir())
    assert names == [MANIFEST_NAME, "train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    for name in names:  # same inputs -> same bytes
        assert (Path(url) / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again.sha256 == manifest.sha256 == hashlib.sha256((Path(url) / MANIFEST_NAME).read_bytes()).hexdigest()
    assert read_manifest(url).sha256 == manifest.sha256

    assert manifest.num_samples("train") == 350 and manifest.num_samples("val") == 50
    train_keys = [s.key for s in iter_split(url, "train")]
    val_keys = [s.key for s in iter_split(url, "val")]
    assert sorted(train_keys + val_keys) == sorted(fmnist_400_source.keys)  # each sample exactly once
    hist = np.array(manifest.table["class_histogram"].to_list()).sum(axis=0)
    assert hist.tolist() == np.bincount(fmnist_400_source.labels, minlength=10).tolist()
    assert manifest.resolution == 32 and manifest.channels == 1 and manifest.num_classes == 10

    other = write_shards(fmnist_400_source, str(tmp_path / "seed1"), **{**SHARDING, "seed": 1})
    assert other.sha256 != manifest.sha256
    assert set(s.key for s in iter_split(str(tmp_path / "seed1"), "val")) != set(val_keys)


def _check_round_trip(url, storage_options, images, labels):
    for split in ("train", "val"):
        x, y, keys = load_split_tensor(url, split, storage_options=storage_options)
        idx = key_index(keys)
        assert x.dtype == torch.uint8 and x.shape == (len(keys), 1, 32, 32) and y.dtype == torch.int64
        assert np.array_equal(x[:, 0].numpy(), padded(images)[idx])  # exact pixels
        assert np.array_equal(y.numpy(), labels[idx])
        assert [s.key for s in iter_split(url, split, storage_options=storage_options)] == keys  # manifest order
    tail = list(iter_split(url, "train", start=170, storage_options=storage_options))  # mid-shard start
    assert [s.key for s in tail] == load_split_tensor(url, "train", storage_options=storage_options)[2][170:]


def test_round_trip_local(local_shards, fmnist_400):
    _check_round_trip(local_shards[0], None, *fmnist_400)


def test_round_trip_s3(s3_server, fmnist_400_source, fmnist_400):
    url = s3_server.url("fmnist")
    manifest = write_shards(fmnist_400_source, url, storage_options=s3_server.storage_options, **SHARDING)
    _check_round_trip(url, s3_server.storage_options, *fmnist_400)
    assert read_manifest(url, s3_server.storage_options).sha256 == manifest.sha256
    stream = StreamedBatches(ShardReader(url, storage_options=s3_server.storage_options), batch_size=16, seed=0,
                             shuffle_buffer=20, world=World())
    x, = next(stream(0))
    assert x.shape == (16, 1, 32, 32)


async def _gc_now() -> None:
    gc.collect()


def _collect_garbage_in_io_thread(worker_id: int) -> None:
    """Worst case, made certain: the child collects the inherited s3fs clients inside its own
    running fsspec event loop, where their finalizer would close them through the parent's epoll."""
    import fsspec.asyn

    fsspec.asyn.sync(fsspec.asyn.get_loop(), _gc_now)


def test_forked_s3_workers_leave_the_parent_client_working(s3_server, fmnist_400_source):
    """Regression: forked DataLoader workers closed the inherited s3fs sessions, and the parent's next
    S3 requests hung ~16 s while the workers lived (see the fork note in ul_pipeline.data.storage)."""
    so = s3_server.storage_options
    url = s3_server.url("fmnist")
    write_shards(fmnist_400_source, url, storage_options=so, **SHARDING)
    t0 = time.perf_counter()  # the same write with no forked workers alive: the machine's own pace
    write_shards(fmnist_400_source, s3_server.url("baseline"), storage_options=so, **SHARDING)
    baseline = time.perf_counter() - t0
    reader = ShardReader(url, storage_options=so)
    stream = ReaderStream(reader, StreamPlan(reader.unit_sizes(), 2, 0, 1), rank=0, readers_per_rank=2, count=16)
    loader = DataLoader(stream, batch_size=None, num_workers=2, worker_init_fn=_collect_garbage_in_io_thread)
    assert all(x.shape == (16, 1, 32, 32) for x, in (b for _, b in zip(range(3), loader)))
    t0 = time.perf_counter()
    write_shards(fmnist_400_source, s3_server.url("again"), storage_options=so, **SHARDING)
    elapsed = time.perf_counter() - t0
    del loader
    gc.collect()  # stop the workers here (torch stops them slowly if collected later in another thread)
    # The bug cost ~16 s per write; against the baseline, so a loaded machine slows both alike
    assert elapsed < 3 * baseline + 3.0, \
        f"parent S3 write took {elapsed:.1f} s while forked S3 workers were alive ({baseline:.1f} s without)"


def test_wrong_s3_secret_is_refused(s3_server, fmnist_400_source):
    url = s3_server.url("fmnist")
    write_shards(fmnist_400_source, url, storage_options=s3_server.storage_options, **SHARDING)
    bad = {**s3_server.storage_options, "secret": "not-the-secret", "skip_instance_cache": True}
    with pytest.raises(PermissionError):
        read_manifest(url, bad)
    with pytest.raises(PermissionError):
        write_shards(fmnist_400_source, s3_server.url("x"), storage_options=bad, **SHARDING)


def test_webdataset_library_reads_our_shards(local_shards):
    import webdataset as wds

    url, manifest = local_shards
    dataset = wds.WebDataset(f"{url}/val-000000.tar", shardshuffle=False).decode("l8").to_tuple("__key__", "png", "cls")
    ours = list(iter_split(url, "val"))
    theirs = list(dataset)
    assert [t[0] for t in theirs] == [s.key for s in ours]
    assert all(np.array_equal(t[1], s.image[0]) and t[2] == s.label for t, s in zip(theirs, ours))


class FailingSource(ArraySource):
    def __getitem__(self, i):
        if i == 321:
            raise RuntimeError("source died")
        return super().__getitem__(i)


def test_failed_sharding_leaves_no_manifest(tmp_path, fmnist_400):
    images, labels = fmnist_400
    keys = [f"k{i}" for i in range(400)]
    source = FailingSource(images, labels, keys, resolution=32, channels=1, pad_to=32)
    url = tmp_path / "shards"
    with pytest.raises(RuntimeError, match="source died"):
        write_shards(source, str(url), **SHARDING)
    assert not (url / MANIFEST_NAME).exists()
    assert all(not p.name.startswith(".") for p in url.iterdir())  # no temporary leftovers
    with pytest.raises(FileNotFoundError, match="no manifest"):
        iter_split(str(url), "train").__next__()

    good = ArraySource(images, labels, keys, resolution=32, channels=1, pad_to=32)
    write_shards(good, str(url), **SHARDING)
    with pytest.raises(FileExistsError, match="manifest.parquet exists"):
        write_shards(good, str(url), **SHARDING)
    before = {p.name: p.read_bytes() for p in url.iterdir()}
    with pytest.raises(RuntimeError):  # a failed overwrite leaves the old set as it was
        write_shards(source, str(url), overwrite=True, **SHARDING)
    assert {p.name: p.read_bytes() for p in url.iterdir()} == before

    wrong_size = ArraySource(images, labels, keys, resolution=28, channels=1)
    with pytest.raises(ValueError, match=r"sample 'k\d+': image uint8 \(1, 28, 28\), expected uint8 \(1, 32, 32\)"):
        write_shards(wrong_size, str(tmp_path / "w"), **SHARDING)
    assert not (tmp_path / "w" / MANIFEST_NAME).exists()


def _snapshot(url: str, storage_options) -> dict[str, bytes]:
    fs, root = url_to_fs(url, storage_options)
    fs.invalidate_cache()
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.ls(root, detail=False)}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_failed_rewrite_keeps_the_old_set_and_a_rewrite_replaces_it(where, request, tmp_path, fmnist_400):
    """A rewrite that dies part-way (a bad label in the 2nd train shard) leaves the old set complete and
    byte-identical; a good rewrite replaces it, and only then are the old tars deleted."""
    if where == "s3":
        s3 = request.getfixturevalue("s3_server")
        url, so = s3.url("shards"), s3.storage_options
    else:
        url, so = str(tmp_path / "shards"), None
    images, labels = fmnist_400
    keys = [f"k-{i}" for i in range(400)]
    array = lambda imgs, labs: ArraySource(imgs, labs, keys, resolution=32, channels=1, pad_to=32)  # noqa: E731
    old = write_shards(array(images, labels), url, storage_options=so, **SHARDING)
    before = _snapshot(url, so)

    bad_labels = labels.astype(np.int64)
    bad_labels[split_indices(400, SHARDING["val_size"], SHARDING["seed"])["train"][200]] = 10  # train shard 1
    with pytest.raises(ValueError, match=r"label 10 outside \[0, 10\)"):
        write_shards(array(255 - images, bad_labels), url, storage_options=so, overwrite=True, **SHARDING)
    assert _snapshot(url, so) == before
    assert read_manifest(url, so).sha256 == old.sha256
    x, _, got = load_split_tensor(url, "train", storage_options=so)  # readable, every sha256 checked
    assert len(got) == 350 and np.array_equal(x[:, 0].numpy(), padded(images)[key_index(got)])

    new = write_shards(array(255 - images, labels), url, storage_options=so, overwrite=True, **SHARDING)
    names = new.table["shard"].to_list()
    assert all(re.fullmatch(r"(train|val)-\d{6}\.[0-9a-f]{12}\.tar", n) for n in names)  # never the old names
    assert sorted(_snapshot(url, so)) == sorted([MANIFEST_NAME, *names])  # the old tars are gone
    x, _, got = load_split_tensor(url, "train", storage_options=so)
    assert np.array_equal(x[:, 0].numpy(), padded(255 - images)[key_index(got)])
    again = write_shards(array(images, labels), url, storage_options=so, overwrite=True, **SHARDING)
    assert again.sha256 == old.sha256 and _snapshot(url, so) == before  # back to the plain names and bytes


def _copy_shards(src: str, dst: Path) -> str:
    dst.mkdir()
    for p in Path(src).iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return str(dst)


def _patch_manifest(url: str, **columns) -> None:
    path = Path(url) / MANIFEST_NAME
    table = pl.read_parquet(path).with_columns(**{k: pl.lit(v) if not isinstance(v, pl.Expr) else v
                                                   for k, v in columns.items()})
    table.write_parquet(path)


def _rewrite_member(url: str, shard: str, member: str, payload: bytes) -> None:
    """Replace one tar member and re-hash the shard in the manifest (so only the content is wrong)."""
    path = Path(url) / shard
    src = tarfile.open(fileobj=io.BytesIO(path.read_bytes()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m in src.getmembers():
            data = payload if m.name == member else src.extractfile(m).read()
            m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    _patch_manifest(url, sha256=pl.when(pl.col("shard") == shard).then(pl.lit(sha)).otherwise(pl.col("sha256")))


def test_bad_shards_raise_errors_naming_shard_and_key(tmp_path, local_shards):
    url = _copy_shards(local_shards[0], tmp_path / "s")
    shard = Path(url) / "train-000001.tar"
    original = shard.read_bytes()

    shard.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(ShardError, match=r"train-000001.tar: sha256 .* does not match"):
        load_split_tensor(url, "train")
    with pytest.raises(ShardError, match=r"train-000001.tar: truncated tar"):
        list(iter_tar_samples(shard.read_bytes(), str(shard)))  # the tar parser alone names it too
    with pytest.raises(ShardError, match=r"train-000001.tar: truncated tar"):
        list(ShardSource(url + "/train-000001.tar", resolution=32, channels=1))
    members = tarfile.open(fileobj=io.BytesIO(original)).getmembers()
    bad_header = bytearray(original)
    bad_header[members[30].offset:members[30].offset + 512] = b"\x07" * 512  # garbage header, intact end
    with pytest.raises(ShardError, match=r"train-000001.tar: corrupt or truncated tar after sample "
                                         rf"'{members[29].name.split('.')[0]}' \(unreadable tar header"):
        list(iter_tar_samples(bytes(bad_header), str(shard)))

    corrupt = bytearray(original)
    corrupt[5000:5400] = b"\xff" * 400  # corrupt in the middle
    shard.write_bytes(bytes(corrupt))
    with pytest.raises(ShardError, match=r"train-000001.tar: sha256 .* does not match"):
        list(iter_split(url, "train"))

    shard.unlink()  # missing
    with pytest.raises(ShardError, match=r"shard .*train-000001.tar: missing"):
        load_split_tensor(url, "train")
    shard.write_bytes(original)
    assert len(load_split_tensor(url, "train")[2]) == 350

    key = next(iter_split(url, "val")).key
    _patch_manifest(url, resolution=28)  # images are 32x32, manifest now says 28
    with pytest.raises(ShardError, match=rf"val-000000.tar, sample '{key}': image is 1x32x32 .* says 1x28x28"):
        load_split_tensor(url, "val")
    _patch_manifest(url, resolution=32, channels=3)
    with pytest.raises(ShardError, match=r"val-000000.tar, sample '[^']+': image is 1x32x32 .* says 3x32x32"):
        next(StreamedBatches(ShardReader(url, "val"), batch_size=4, seed=0, shuffle_buffer=1, world=World())(0))
    _patch_manifest(url, channels=1)

    _rewrite_member(url, "val-000000.tar", f"{key}.cls", b"12")
    with pytest.raises(ShardError, match=rf"val-000000.tar, sample '{key}': label 12 outside \[0, 10\)"):
        load_split_tensor(url, "val")
    _rewrite_member(url, "val-000000.tar", f"{key}.cls", b"cat")
    with pytest.raises(ShardError, match=rf"val-000000.tar, sample '{key}': bad or missing label"):
        load_split_tensor(url, "val")
    _rewrite_member(url, "val-000000.tar", f"{key}.png", b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ShardError, match=rf"val-000000.tar, sample '{key}': cannot decode {key}.png"):
        load_split_tensor(url, "val")


def test_rgb_shards_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 3, 16, 16), dtype=np.uint8)
    source = ArraySource(images, np.arange(20) % 3, [f"rgb-{i:02d}" for i in range(20)], resolution=16, channels=3)
    write_shards(source, str(tmp_path), shard_size=8, val_size=4, seed=3, resolution=16, channels=3, num_classes=3)
    x, y, keys = load_split_tensor(str(tmp_path), "train")
    idx = key_index(keys)
    assert x.shape == (16, 3, 16, 16) and np.array_equal(x.numpy(), images[idx]) and np.array_equal(y.numpy(), idx % 3)


def test_the_stage1_stream_holds_train_images_only_and_follows_the_seed(local_shards):
    url, manifest = local_shards
    pixels = {s.image.tobytes(): s.key for s in iter_split(url, "train")}

    def batches(n, workers=0, **kw):
        source = StreamedBatches(ShardReader(url), batch_size=32, shuffle_buffer=64, workers=workers,
                                 **{"seed": 1, "world": World(), **kw})
        it = source(0)
        out = [next(it)[0] for _ in range(n)]
        del it
        gc.collect()  # stop any DataLoader workers here
        return out

    first = batches(15)  # 480 samples > 350: the stream goes on into the next epoch
    assert all(x.shape == (32, 1, 32, 32) and x.dtype == torch.uint8 for x in first)
    seen = Counter(pixels[img.numpy().tobytes()] for x in first for img in x)  # only train images
    assert len(seen) == 350 and max(seen.values()) == 2
    assert all(torch.equal(a, b) for a, b in zip(first, batches(15)))  # reproducible from the seed
    assert not torch.equal(first[0], batches(1, seed=2)[0])
    rank0, rank1 = batches(3, world=World(0, 2)), batches(3, world=World(1, 2))
    assert {img.tobytes() for x in rank0 for img in x.numpy()}.isdisjoint(img.tobytes() for x in rank1 for img in x.numpy())
    assert all(x.shape == (16, 1, 32, 32) for x in batches(4, workers=2, world=World(1, 2)))


def test_resharding_existing_shards(tmp_path, local_shards, fmnist_400):
    url, _ = local_shards
    source = build_source("shards", url, resolution=32, channels=1)
    assert isinstance(source, ShardSource)
    samples = list(source)  # all splits, in manifest order
    assert [s.key for s in samples] == [s.key for split in ("train", "val") for s in iter_split(url, split)]
    write_shards(samples, str(tmp_path / "again"), **{**SHARDING, "val_size": 100, "seed": 7})
    x, y, keys = load_split_tensor(str(tmp_path / "again"), "val")
    idx = key_index(keys)
    assert len(keys) == 100 and np.array_equal(x[:, 0].numpy(), padded(fmnist_400[0])[idx])
    assert np.array_equal(y.numpy(), fmnist_400[1][idx])
    with pytest.raises(ValueError, match="needs data.uri"):
        build_source("image_folder", None, resolution=32, channels=1)


def test_a_second_writer_of_one_local_shard_set_fails_at_once_naming_the_first(tmp_path, fmnist_400_source):
    from ul_pipeline.data.storage import ArtifactBusy, exclusive_lock

    url = str(tmp_path / "fmnist")
    write_shards(fmnist_400_source, url, **SHARDING)
    before = {p.name: p.read_bytes() for p in Path(url).iterdir()}
    with exclusive_lock(str(tmp_path / ".fmnist.lock"), "the first writer"):  # a concurrent overwrite holds the set
        with pytest.raises(ArtifactBusy, match=r"shard set .*fmnist is in use"):
            write_shards(fmnist_400_source, url, **{**SHARDING, "seed": 1}, overwrite=True)
    assert {p.name: p.read_bytes() for p in Path(url).iterdir()} == before
