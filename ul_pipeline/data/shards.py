"""Dataset shards: a deterministic train/validation split written as WebDataset tars + a manifest.

Layout under `out_url` (local path or fsspec URL such as `s3://bucket/prefix`):

    train-000000.tar, train-000001.tar, ...   WebDataset tars; per sample `<key>.cls` (label, ASCII
    val-000000.tar, ...                       int), `<key>.json` (key, label, source, original size)
    manifest.parquet                          and `<key>.png` (8-bit PNG, L or RGB), or for a
                                              video clip `<key>.npy` (uint8 T x C x H x W); a
                                              captioned source adds `<key>.txt` (UTF-8 caption)

`manifest.parquet` (see `manifest.py`) is written LAST: a shard set without one is incomplete.
Same inputs -> same bytes (tar headers carry no time or owner). Loaders follow the manifest's
`shard` column, never a listing: a rewrite puts a shard whose bytes change under a new name
(`train-000000.<12 hex of its sha256>.tar`), so the old set stays complete and valid until the new
manifest replaces it; tars no manifest names are deleted after that.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tarfile
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import polars as pl
from PIL import Image

from ul_pipeline.data.codecs import decode_clip, decode_image, encode_clip, encode_png
from ul_pipeline.data.manifest import (CAPTIONS_COLUMN, CLASS_NAMES_COLUMN, DATA_SHA256_COLUMN, FORMAT_VERSION,
                                      MANIFEST_COLUMNS, MANIFEST_NAME, OPTIONAL_COLUMNS, SPLITS, ShardError, ShardManifest,
                                      read_manifest, shard_name)
from ul_pipeline.data.sample import Sample, expected_shape
from ul_pipeline.data.storage import StorageOptions, is_local, join_url, local_writer_lock, url_to_fs, write_bytes_atomic

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "ppm", "pgm", "bmp")
_SHARD_NAME = re.compile(r"^(train|val)-\d{6}(\.[0-9a-f]{12})?\.tar$")  # see manifest.shard_name


# ---------------------------------------------------------------------------- the tar format


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(payload), 0o644, 0  # no time/owner: reproducible bytes
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


def tar_bytes(samples: Iterable[Sample]) -> bytes:
    """WebDataset tar of samples: `<key>.cls`, `<key>.json`, `<key>.png` each (+ `<key>.txt` when captioned)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for s in samples:
            meta = {"key": s.key, "label": int(s.label), **{k: v for k, v in s.info.items() if k not in ("key", "label")}}
            _add_member(tar, f"{s.key}.cls", str(int(s.label)).encode())
            _add_member(tar, f"{s.key}.json", json.dumps(meta, sort_keys=True).encode())
            if s.image.ndim == 4:  # a clip (C, T, H, W)
                _add_member(tar, f"{s.key}.npy", encode_clip(s.image))
            else:
                _add_member(tar, f"{s.key}.png", encode_png(s.image))
            if s.caption is not None:  # only captioned sources: uncaptioned shards keep their bytes
                _add_member(tar, f"{s.key}.txt", s.caption.encode("utf-8"))
    return buf.getvalue()


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the basename; ext = the rest."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_tar_groups(data: bytes, shard_url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: payload}) for consecutive tar members sharing a key (payloads undecoded)."""
    if len(data) % 512 or data[-512:] != bytes(512):  # tarfile stops silently at a cut between members
        raise ShardError(f"shard {shard_url}: truncated tar ({len(data)} bytes, no end-of-archive marker)")
    key, group = None, {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = _split_name(member.name)
                if k != key and key is not None:
                    yield key, group
                    group = {}
                key = k
                f = tar.extractfile(member)
                payload = f.read() if f is not None else b""
                if len(payload) != member.size:
                    raise EOFError(f"member {member.name} truncated")
                group[ext] = payload
            if any(data[tar.offset:]):  # tarfile also stops silently at an unreadable header
                raise tarfile.ReadError(f"unreadable tar header at byte {tar.offset}")
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        after = f" after sample '{key}'" if key is not None else ""
        raise ShardError(f"shard {shard_url}: corrupt or truncated tar{after} ({e})") from None
    if key is not None:
        yield key, group


def iter_tar_samples(data: bytes, shard_url: str, *, start: int = 0,
                     expect: Optional[tuple[int, ...]] = None) -> Iterator[Sample]:
    """Decode the samples of one WebDataset tar held in memory, skipping the first `start`.

    `expect = (resolution, channels, num_classes[, frames])` validates every image and label; any problem
    raises ShardError naming the shard URL and the sample key.
    """
    for i, (key, group) in enumerate(iter_tar_groups(data, shard_url)):
        if i >= start:
            yield decode_sample(key, group, shard_url, expect)


def decode_sample(key: str, group: dict[str, bytes], shard_url: str,
                  expect: Optional[tuple[int, ...]] = None) -> Sample:
    """One sample from its tar members `{ext: payload}` (see `iter_tar_samples` for `expect`)."""
    where = f"shard {shard_url}, sample '{key}'"
    ext = next((e for e in (*IMAGE_EXTS, "npy") if e in group), None)
    if ext is None:
        raise ShardError(f"{where}: no image or clip member (have {sorted(group)})")
    try:
        image = decode_clip(group[ext]) if ext == "npy" else decode_image(group[ext])
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ShardError(f"{where}: cannot decode {key}.{ext} ({e})") from None
    info: dict[str, Any] = {}
    try:
        if "json" in group:
            info = json.loads(group["json"])
        label = int(group["cls"]) if "cls" in group else int(info["label"])
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{where}: bad or missing label ({e!r})") from None
    try:
        caption = group["txt"].decode("utf-8") if "txt" in group else None
    except UnicodeDecodeError as e:
        raise ShardError(f"{where}: {key}.txt is not UTF-8 ({e})") from None
    if expect is not None:
        resolution, channels, num_classes, *frames = expect
        want = expected_shape(resolution, channels, *frames)
        if image.shape != want:
            axes = "CxTxHxW" if image.ndim == 4 else "CxHxW"
            raise ShardError(f"{where}: {'clip' if image.ndim == 4 else 'image'} is "
                             f"{'x'.join(map(str, image.shape))} ({axes}), manifest says "
                             f"{'x'.join(map(str, want))}")
        if not 0 <= label < max(num_classes, 1):  # num_classes 0 (unconditional): every label is 0
            raise ShardError(f"{where}: label {label} outside [0, {max(num_classes, 1)})")
    return Sample(key, image, label, info, caption)


def read_shard_bytes(shard_url: str, storage_options: StorageOptions = None, *,
                     expect_sha256: Optional[str] = None) -> bytes:
    """Whole shard bytes; checked against the manifest's sha256 when given."""
    fs, path = url_to_fs(shard_url, storage_options)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise ShardError(f"shard {shard_url}: missing") from None
    if expect_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != expect_sha256:
            raise ShardError(f"shard {shard_url}: sha256 {got} ({len(data)} bytes) does not match the "
                             f"manifest's {expect_sha256}; truncated, corrupt or replaced")
    return data


# ---------------------------------------------------------------------------- writing


def split_indices(num_samples: int, val_size: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic split: a seeded permutation; its first `val_size` entries are validation."""
    if not 0 <= val_size < num_samples:
        raise ValueError(f"val_size={val_size} must be in [0, {num_samples}) for {num_samples} samples")
    perm = np.random.default_rng(seed).permutation(num_samples)
    return {"val": perm[:val_size], "train": perm[val_size:]}


def _check_sample(s: Sample, resolution: int, channels: int, num_classes: int, frames: int = 0) -> None:
    if not isinstance(s.key, str) or not s.key or re.search(r"[^A-Za-z0-9_-]", s.key):
        raise ValueError(f"sample key {s.key!r}: keys must be non-empty [A-Za-z0-9_-] (see sanitize_key)")
    img = s.image
    want = expected_shape(resolution, channels, frames)
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != want:
        shape = getattr(img, "shape", None)
        raise ValueError(f"sample '{s.key}': {'clip' if frames else 'image'} {getattr(img, 'dtype', type(img))} "
                         f"{shape}, expected uint8 {want}")
    if not 0 <= int(s.label) < num_classes:
        raise ValueError(f"sample '{s.key}'{' (' + s.info['path'] + ')' if 'path' in s.info else ''}: label "
                         f"{s.label} outside [0, {num_classes}) (data.num_classes)")


def _published(out_url: str, storage_options: StorageOptions) -> dict[str, str]:
    """{shard name: sha256} of the complete set at `out_url`; empty when it has no readable manifest."""
    try:
        table = read_manifest(out_url, storage_options).table
    except (FileNotFoundError, ShardError):
        return {}
    return dict(zip(table["shard"].to_list(), table["sha256"].to_list()))


def _free_name(split: str, index: int, sha256: str, published: dict[str, str]) -> str:
    """`train-000000.tar`, unless the published set holds other bytes under that name: then a name of
    these bytes (`train-000000.<sha256[:12]>.tar`), so writing it never changes the published set."""
    name = shard_name(split, index)
    return name if published.get(name, sha256) == sha256 else shard_name(split, index, sha256[:12])


def write_shards(source_samples, out_url: str, **kwargs) -> ShardManifest:
    """Split `source_samples` deterministically and write train/val WebDataset shards + manifest
    (`_write_shards` has the arguments). One writer at a time: on a local filesystem the set is
    locked (`<out_url>.lock`) for the whole write, and a second writer fails at once naming the
    first; object stores have no locks, so run one writer per set there (the assets do)."""
    fs, root = url_to_fs(out_url, kwargs.get("storage_options"))
    with local_writer_lock(fs, root, f"shard set {out_url}"):
        return _write_shards(source_samples, out_url, **kwargs)


def _write_shards(source_samples, out_url: str, *, shard_size: int, val_size: int, seed: int,
                 resolution: int, channels: int, num_classes: int, limit: Optional[int] = None,
                 storage_options: StorageOptions = None, overwrite: bool = False,
                 progress: Optional[Callable[[int, int], None]] = None, frames: int = 0,
                 data_sha256: Optional[str] = None, class_names: Optional[list[str]] = None) -> ShardManifest:
    """Split `source_samples` deterministically and write train/val WebDataset shards + manifest.

    `source_samples`: a sequence (len + indexing, read lazily) or any iterable of `Sample` /
    `(key, image uint8 (C, H, W), label[, info])`; with `frames` > 0 each image is a clip
    uint8 (C, frames, H, W). `limit` keeps the first `limit` samples.
    An existing manifest at `out_url` raises FileExistsError unless `overwrite`; then the old set
    stays complete until the new manifest replaces it (changed shards get new names, see
    `_free_name`), and a failure part-way removes what it wrote and leaves the old set as it was.
    Tars of an older set that the new manifest does not name are deleted after it is written.
    `progress(samples_written, total)` is called after each shard. `data_sha256` (the hash of the
    config `data` section these shards are made from) and `class_names` (the label map) go into the manifest
    when given. `num_classes` 0 (an unconditional set) stores label 0 for every sample.
    """
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    fs, root = url_to_fs(out_url, storage_options)
    root = root.rstrip("/")
    manifest_path = f"{root}/{MANIFEST_NAME}"
    if fs.exists(manifest_path) and not overwrite:
        raise FileExistsError(f"{join_url(out_url, MANIFEST_NAME)} exists; pass overwrite=True to rewrite the shards")
    published = _published(out_url, storage_options)  # the set readers see until our manifest lands
    fs.makedirs(root, exist_ok=True)

    own_split = getattr(source_samples, "split_indices", None)  # a source with its own held-out rule (emoji)
    if not (hasattr(source_samples, "__getitem__") and hasattr(source_samples, "__len__")):
        source_samples = list(source_samples)
    num_samples = len(source_samples) if limit is None else min(limit, len(source_samples))
    splits = own_split(num_samples, seed) if own_split else split_indices(num_samples, val_size, seed)

    def get(i: int) -> Sample:
        s = source_samples[int(i)]
        s = s if isinstance(s, Sample) else Sample(*s)
        return s if num_classes else s._replace(label=0)

    rows, seen_keys, sources, written, captioned = [], set(), set(), 0, 0
    try:
        for split, indices in sorted(splits.items(),
                                     key=lambda kv: SPLITS.index(kv[0])):
            for shard_index, lo in enumerate(range(0, len(indices), shard_size)):
                samples = [get(i) for i in indices[lo:lo + shard_size]]
                histogram = [0] * max(num_classes, 1)
                for s in samples:
                    _check_sample(s, resolution, channels, max(num_classes, 1), frames)
                    if s.key in seen_keys:
                        raise ValueError(f"sample key '{s.key}' appears twice in the source")
                    seen_keys.add(s.key)
                    histogram[int(s.label)] += 1
                    sources.add(str(s.info.get("source", "unknown")))
                    captioned += s.caption is not None
                    if captioned and captioned != len(seen_keys):
                        raise ValueError(f"sample '{s.key}': some samples have captions and others not")
                data = tar_bytes(samples)
                sha = hashlib.sha256(data).hexdigest()
                name = _free_name(split, shard_index, sha, published)
                write_bytes_atomic(fs, f"{root}/{name}", data)
                rows.append({"split": split, "shard": name, "first_index": lo, "samples": len(samples),
                             "bytes": len(data), "sha256": sha, "class_histogram": histogram})
                written += len(samples)
                if progress is not None:
                    progress(written, num_samples)
    except BaseException:
        for r in rows:  # ours alone; a name the published set uses holds its own bytes (see _free_name)
            if r["shard"] not in published:
                with contextlib.suppress(OSError):  # the original error matters more than a leftover tar
                    fs.rm(f"{root}/{r['shard']}")
        raise

    dataset = {"format_version": FORMAT_VERSION, "resolution": resolution, "channels": channels,
               "num_classes": num_classes, "seed": seed, "val_size": len(splits["val"]) if own_split else val_size,
               "shard_size": shard_size, "sources": ",".join(sorted(sources)), "frames": frames}
    optional = [*OPTIONAL_COLUMNS]
    if captioned:  # only then: an uncaptioned set's manifest (and its sha256) stays as it was
        dataset[CAPTIONS_COLUMN] = True
        optional.append(CAPTIONS_COLUMN)
    for column, value in ((DATA_SHA256_COLUMN, data_sha256), (CLASS_NAMES_COLUMN, class_names)):
        if value is not None:  # only when given: the manifests (and sha256) of other sets stay as they were
            dataset[column] = value
            optional.append(column)
    table = pl.DataFrame([{**r, **dataset} for r in rows],
                         schema_overrides={"class_histogram": pl.List(pl.Int64), "first_index": pl.Int64,
                                           **({CLASS_NAMES_COLUMN: pl.List(pl.String)} if class_names else {}),
                                           "samples": pl.Int64, "bytes": pl.Int64})
    table = table.select(*MANIFEST_COLUMNS, *optional)
    buf = io.BytesIO()
    table.write_parquet(buf)
    manifest_bytes = buf.getvalue()
    write_bytes_atomic(fs, manifest_path, manifest_bytes)  # LAST: now the new set is the complete one

    keep = {r["shard"] for r in rows}
    fs.invalidate_cache(root)
    for path in fs.ls(root, detail=False):  # tars of the set we replaced; locally (we hold the lock) also
        name = path.rstrip("/").rsplit("/", 1)[-1]  # those of a crashed write, which no manifest names
        if _SHARD_NAME.match(name) and name not in keep and (name in published or is_local(fs)):
            fs.rm(path)
    return ShardManifest(out_url, table, hashlib.sha256(manifest_bytes).hexdigest())
