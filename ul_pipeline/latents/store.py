"""The latent store: a self-describing Zarr v3 group of cached Stage-1 latents `z_clean`.

Readable with plain `zarr.open_group(url)` or `xarray.open_zarr(url)` (no ul_pipeline import
needed); every array carries Zarr v3 `dimension_names` (`sample`, `channel`, `y`, `x`; `block`):

    z_clean      (N, C, h, w) float32|float16   chunks of `block_size` samples; video latents are
                                                (N, C, t, h, w), everything else the same
    z_logvar     (N, C, h, w) float32|float16   only for a learned encoder variance: log s^2 (z0 =
                                                alpha0 (z_clean + s eps1) + sigma0 eps2)
    z_clean_hflip (N, C, h, w) float32|float16  only with data.hflip: z_clean of the mirrored image
    labels       (N,) int64                     same chunking
    keys         (N,) string (vlen-utf8)        same chunking; the shard sample keys
    blocks_done  (num_blocks,) uint8            1 once block i is written (resumable extraction)
    attrs["ul"]  {format_version, encoder_sha256, stage1_config, logsnr_0, latent_shape,
                  dataset_manifest_sha256, split, channel_mean, channel_std, latent_shift,
                  latent_scale, created_at, complete, num_samples, block_size, dtype, ...}

`latent_shift` (per channel) and `latent_scale` (one number) standardise the latents for Stage 2
(`stage2.standardize`; ul_pipeline/latents/standardize.py); a learned variance's mean E[s^2] counts
in the scale. `complete` turns True only after every block and the channel statistics are written; the
metadata is then consolidated. `open_store` refuses an incomplete store and one written by
another encoder than the caller names. Latents are `z_clean` (before the encoder noise, eq. 2):
Stage 2 noises them at load time.
"""

from __future__ import annotations

import json
import math
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np
import zarr
from zarr.errors import GroupNotFoundError, NodeTypeValidationError
from zarr.storage import FsspecStore, LocalStore

from ul_pipeline.data.storage import StorageOptions, is_local, url_to_fs
from ul_pipeline.latents.standardize import Standardization

FORMAT_VERSION = 1
REQUIRED_META = ("encoder_sha256", "stage1_config", "logsnr_0", "dataset_manifest_sha256", "split")
DTYPES = ("float32", "float16")
LATENT_DIMS = ("sample", "channel", "y", "x")  # Zarr v3 dimension_names: xarray.open_zarr reads them
VIDEO_LATENT_DIMS = ("sample", "channel", "time", "y", "x")  # video latents (N, C, t, h, w)


class LatentStoreError(ValueError):
    """A latent store is missing, incomplete, or from another encoder/dataset; names the URL and hashes."""


def zarr_store(url: str, storage_options: StorageOptions = None, read_only: bool = False):
    """A zarr Store for a local path or any fsspec URL (S3 credentials via storage_options)."""
    fs, path = url_to_fs(url, storage_options)
    if is_local(fs):
        return LocalStore(path, read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)


@dataclass
class LatentStore:
    """An opened latent store: its URL, zarr group and the `ul` metadata."""

    url: str
    group: zarr.Group
    storage_options: StorageOptions = None

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.group.attrs["ul"])

    @property
    def z_clean(self) -> zarr.Array:
        return self.group["z_clean"]

    @property
    def z_logvar(self) -> zarr.Array | None:
        """log s^2 of a learned encoder variance (same shape as z_clean), or None for fixed noise."""
        return self.group["z_logvar"] if "z_logvar" in self.group else None

    @property
    def z_clean_hflip(self) -> zarr.Array | None:
        """z_clean of the mirrored images (data.hflip), or None."""
        return self.group["z_clean_hflip"] if "z_clean_hflip" in self.group else None

    @property
    def z_clean_context(self) -> zarr.Array | None:
        """Video frame prediction: z_clean of each clip padded after its `context_frames` (meta), or None."""
        return self.group["z_clean_context"] if "z_clean_context" in self.group else None

    @property
    def labels(self) -> zarr.Array:
        return self.group["labels"]

    @property
    def keys(self) -> zarr.Array:
        return self.group["keys"]

    @property
    def blocks_done(self) -> zarr.Array:
        return self.group["blocks_done"]

    @property
    def num_samples(self) -> int:
        return int(self.meta["num_samples"])

    @property
    def block_size(self) -> int:
        return int(self.meta["block_size"])

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.num_samples / self.block_size)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["latent_shape"])

    def __len__(self) -> int:
        return self.num_samples

    def block_slice(self, block: int) -> slice:
        lo = block * self.block_size
        return slice(lo, min(lo + self.block_size, self.num_samples))

    def read_block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(z_clean float32 (b, C, h, w), labels int64 (b,)) of one block (one chunk per array)."""
        s = self.block_slice(block)
        return np.asarray(self.z_clean[s], dtype=np.float32), np.asarray(self.labels[s], dtype=np.int64)

    def key_list(self) -> list[str]:
        return [str(k) for k in self.keys[:].tolist()]

    def write_block(self, block: int, z_clean: np.ndarray, labels: np.ndarray, keys: list[str],
                    z_logvar: np.ndarray | None = None, extra: dict[str, np.ndarray] | None = None) -> None:
        """Write one block's data (`extra`: the store's other latent arrays), then mark it done (marker last)."""
        s = self.block_slice(block)
        n = s.stop - s.start
        if z_clean.shape != (n, *self.latent_shape) or labels.shape != (n,) or len(keys) != n:
            raise LatentStoreError(f"latent store {self.url}: block {block} needs {n} samples of "
                                   f"{self.latent_shape}, got z {z_clean.shape}, labels {labels.shape}, {len(keys)} keys")
        if (z_logvar is None) != (self.z_logvar is None) or (z_logvar is not None and z_logvar.shape != z_clean.shape):
            raise LatentStoreError(f"latent store {self.url}: block {block}: z_logvar "
                                   f"{None if z_logvar is None else z_logvar.shape} does not fit a store "
                                   f"{'with' if self.z_logvar is not None else 'without'} z_logvar")
        for name, z in (extra or {}).items():
            if name not in self.group or z.shape != z_clean.shape:
                raise LatentStoreError(f"latent store {self.url}: block {block}: array {name} "
                                       f"{'not in the store' if name not in self.group else z.shape}")
            self.group[name][s] = z.astype(self.group[name].dtype)
        self.z_clean[s] = z_clean.astype(self.z_clean.dtype)
        if z_logvar is not None:
            self.z_logvar[s] = z_logvar.astype(self.z_logvar.dtype)
        self.labels[s] = labels.astype(np.int64)
        self.keys[s] = np.array(keys, dtype=str)
        self.blocks_done[block] = 1

    def done_blocks(self) -> np.ndarray:
        """bool (num_blocks,): which blocks are written."""
        return np.asarray(self.blocks_done[:]).astype(bool)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of z_clean over all samples and positions (float64, chunk by chunk)."""
        count, mean, m2 = 0, None, None
        for b in range(self.num_blocks):
            z, _ = self.read_block(b)
            z = np.moveaxis(z.astype(np.float64), 1, 0).reshape(z.shape[1], -1)  # (C, b*[t*]h*w)
            n_b, mean_b = z.shape[1], z.mean(axis=1)
            m2_b = ((z - mean_b[:, None]) ** 2).sum(axis=1)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            delta, total = mean_b - mean, count + n_b  # Chan et al. parallel combination
            mean = mean + delta * n_b / total
            m2 = m2 + m2_b + delta ** 2 * count * n_b / total
            count = total
        std = np.sqrt(m2 / count)
        return [float(x) for x in mean], [float(x) for x in std]


    def mean_learned_variance(self) -> float:
        """E[s^2] = mean of exp(z_logvar) over all samples and positions (0 without a learned variance)."""
        if self.z_logvar is None:
            return 0.0
        total, count = 0.0, 0
        for b in range(self.num_blocks):
            v = np.exp(np.asarray(self.z_logvar[self.block_slice(b)], dtype=np.float64))
            total, count = total + float(v.sum()), count + v.size
        return total / count

    def standardization(self) -> Standardization:
        """The store's latent_shift / latent_scale (computed from its channel statistics for older stores)."""
        meta = self.meta
        if meta.get("latent_scale") is not None:
            return Standardization.from_dict({"shift": meta["latent_shift"], "scale": meta["latent_scale"]})
        return Standardization.from_stats(meta["channel_mean"], meta["channel_std"], self.mean_learned_variance())


def store_exists(url: str, storage_options: StorageOptions = None) -> bool:
    fs, path = url_to_fs(url, storage_options)
    return fs.exists(f"{path.rstrip('/')}/zarr.json")


def store_lacks_meta(url: str, storage_options: StorageOptions = None) -> bool:
    """True for a zarr group at `url` without the `ul` attribute: `create_store` died before writing it
    (it writes `ul` last). False when there is no group, or the group has `ul` (of any encoder)."""
    try:
        group = zarr.open_group(zarr_store(url, storage_options, read_only=True), mode="r", zarr_format=3)
    except (FileNotFoundError, GroupNotFoundError, NodeTypeValidationError):
        return False
    return "ul" not in group.attrs


def create_store(url: str, num_samples: int, latent_shape: tuple[int, ...], dtype: str = "float32",
                 block_size: int = 1024, meta: Optional[dict[str, Any]] = None, *,
                 storage_options: StorageOptions = None, overwrite: bool = False,
                 with_logvar: bool = False, extra_latents: tuple[str, ...] = ()) -> LatentStore:
    """Create an empty, incomplete store (complete=False). `meta` must hold REQUIRED_META keys;
    extra JSON-able keys are kept. An existing store raises unless `overwrite`. `with_logvar`
    adds the `z_logvar` array (a learned encoder variance); `extra_latents` names more arrays shaped
    like z_clean (e.g. `z_clean_hflip`)."""
    meta = dict(meta or {})
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise LatentStoreError(f"latent store {url}: meta lacks {missing}")
    if dtype not in DTYPES:
        raise LatentStoreError(f"latent store {url}: dtype '{dtype}' not in {DTYPES}")
    if num_samples <= 0 or block_size <= 0 or len(latent_shape) not in (3, 4):
        raise LatentStoreError(f"latent store {url}: bad num_samples={num_samples}, block_size={block_size} "
                               f"or latent_shape={latent_shape} (want (C, h, w) or video (C, t, h, w))")
    try:
        json.dumps(meta)
    except TypeError as e:
        raise LatentStoreError(f"latent store {url}: meta is not JSON-serialisable ({e})") from None
    if store_exists(url, storage_options) and not overwrite:
        raise FileExistsError(f"latent store {url} exists; pass overwrite=True to replace it")
    group = zarr.open_group(zarr_store(url, storage_options), mode="w", zarr_format=3)
    n, latent = num_samples, tuple(int(d) for d in latent_shape)
    dims = LATENT_DIMS if len(latent) == 3 else VIDEO_LATENT_DIMS
    for name in ("z_clean", *(["z_logvar"] if with_logvar else []), *extra_latents):
        group.create_array(name, shape=(n, *latent), chunks=(block_size, *latent), dtype=dtype,
                           fill_value=float("nan"), dimension_names=dims)
    group.create_array("labels", shape=(n,), chunks=(block_size,), dtype="int64", fill_value=-1,
                       dimension_names=("sample",))
    group.create_array("keys", shape=(n,), chunks=(block_size,), dtype=str, fill_value="",
                       dimension_names=("sample",))
    group.create_array("blocks_done", shape=(math.ceil(n / block_size),), chunks=(1,), dtype="uint8", fill_value=0,
                       dimension_names=("block",))
    ul = {**meta, "format_version": FORMAT_VERSION, "latent_shape": list(latent),
          "num_samples": int(n), "block_size": int(block_size), "dtype": dtype,
          "channel_mean": None, "channel_std": None,
          "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "complete": False,
          "creation_id": uuid.uuid4().hex}  # which creation this is: a writer checks it before every block
    group.attrs["ul"] = ul  # LAST: a group without `ul` is a half-created store (store_lacks_meta)
    return LatentStore(url, group, storage_options)


def finalize_store(store: LatentStore) -> LatentStore:
    """Check all blocks are done, write channel statistics, set complete=True LAST, consolidate."""
    done = store.done_blocks()
    if not done.all():
        raise LatentStoreError(f"latent store {store.url}: blocks {np.flatnonzero(~done).tolist()[:10]} not written")
    mean, std = store.channel_stats()
    standard = Standardization.from_stats(mean, std, store.mean_learned_variance())
    store.group.attrs["ul"] = {**store.meta, "channel_mean": mean, "channel_std": std,
                               "latent_shift": list(standard.shift), "latent_scale": standard.scale, "complete": True}
    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec" (zarr-python reads it)
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store.group.store)
    return store


def open_store(url: str, expect_encoder_sha256: Optional[str] = None, *, storage_options: StorageOptions = None,
               allow_incomplete: bool = False, read_only: bool = True) -> LatentStore:
    """Open a latent store; refuse it when incomplete or written by an encoder other than `expect_encoder_sha256`."""
    try:
        group = zarr.open_group(zarr_store(url, storage_options, read_only=read_only), mode="r" if read_only else "r+",
                                zarr_format=3)
    except (FileNotFoundError, GroupNotFoundError, NodeTypeValidationError) as e:
        raise LatentStoreError(f"latent store {url}: not found ({e})") from None
    if "ul" not in group.attrs:
        raise LatentStoreError(f"latent store {url}: zarr group without the 'ul' attribute; not a latent store")
    store = LatentStore(url, group, storage_options)
    meta = store.meta
    if int(meta.get("format_version", -1)) != FORMAT_VERSION:
        raise LatentStoreError(f"latent store {url}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    if expect_encoder_sha256 is not None and meta["encoder_sha256"] != expect_encoder_sha256:
        raise LatentStoreError(f"latent store {url} was written by encoder {meta['encoder_sha256']}, "
                               f"not the expected encoder {expect_encoder_sha256}")
    if not allow_incomplete and not meta.get("complete", False):
        done = int(np.asarray(group["blocks_done"][:]).sum()) if "blocks_done" in group else 0
        raise LatentStoreError(f"latent store {url} is incomplete (complete=False, {done}/"
                               f"{math.ceil(meta['num_samples'] / meta['block_size'])} blocks written; "
                               f"encoder {meta['encoder_sha256']}); re-run extraction to finish it")
    return store
