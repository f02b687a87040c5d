"""Latent extraction: encode one split of the shards block by block into a latent store, resumably.

Each block (`block_size` samples = one Zarr chunk per array) is encoded in batches that never
cross a block boundary, written, then marked done in `blocks_done`. A crash keeps the finished
blocks; a re-run encodes only the rest and produces the same store as an uninterrupted run (for a
deterministic encoder). Channel statistics and `complete=True` are written last.

Under torchrun each rank encodes its own contiguous range of blocks. Every block is its own object
in every array (a Zarr chunk of `block_size` samples, and a one-element chunk of `blocks_done`),
so no two processes ever write the same object; rank 0 creates the store before the others open
it, and finalises it once, after a barrier that follows the last block of every rank.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from ul_pipeline import distributed
from ul_pipeline.latents.store import (
    LatentStore, LatentStoreError, create_store, finalize_store, open_store, store_exists, store_lacks_meta,
)
from ul_pipeline.data.loader import iter_split
from ul_pipeline.data.manifest import read_manifest
from ul_pipeline.data.sources import Sample
from ul_pipeline.data.storage import StorageOptions, local_writer_lock, url_to_fs

# uint8 (B, C, H, W) -> z_clean float (B, c, h, w), or (z_clean, z_logvar) for a learned encoder variance,
# or {"z_clean": ..., other latent arrays such as "z_clean_hflip": ...} (each (B, c, h, w))
EncodeFn = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]]
_MUST_MATCH = ("dataset_manifest_sha256", "split", "num_samples", "block_size", "dtype")


def _as_named(zs) -> dict[str, torch.Tensor]:
    """encode_fn's output as {array name: tensor}: a tensor is z_clean, a pair is (z_clean, z_logvar)."""
    if isinstance(zs, dict):
        return zs
    zs = zs if isinstance(zs, tuple) else (zs,)
    return dict(zip(("z_clean", "z_logvar"), zs))


def _encode_block(encode_fn: EncodeFn, images: np.ndarray, batch_size: int,
                  where: str) -> dict[str, np.ndarray]:
    """{z_clean, and z_logvar / z_clean_hflip when the encoder gives them} of one block, checked."""
    out: list[dict[str, np.ndarray]] = []
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            x = torch.from_numpy(images[lo:lo + batch_size])  # (B, C, H, W) uint8
            zs = _as_named(encode_fn(x))
            for z in zs.values():
                if not isinstance(z, torch.Tensor) or z.ndim != x.ndim or z.shape[0] != x.shape[0]:
                    raise ValueError(f"{where}: encode_fn returned {getattr(z, 'shape', type(z))} for a batch "
                                     f"of {tuple(x.shape)}; expected (B, C, h, w) or video (B, C, t, h, w)")
            zs = {k: z.detach().to("cpu", torch.float32).numpy() for k, z in zs.items()}
            if not all(np.isfinite(z).all() for z in zs.values()):
                raise ValueError(f"{where}: encode_fn returned non-finite latents")
            out.append(zs)
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def _check_compatible(store: LatentStore, want: dict[str, Any]) -> None:
    meta = store.meta
    if meta["encoder_sha256"] != want["encoder_sha256"]:
        raise LatentStoreError(f"latent store {store.url} holds latents of encoder {meta['encoder_sha256']}, "
                               f"not {want['encoder_sha256']}; refusing to mix them (pass overwrite=True to replace)")
    for k in _MUST_MATCH:
        if meta.get(k) != want[k]:
            raise LatentStoreError(f"latent store {store.url}: {k} is {meta.get(k)!r}, this extraction has "
                                   f"{want[k]!r} (pass overwrite=True to replace)")
    have, need = meta.get("context_frames", 0), want.get("context_frames", 0)
    # video frame prediction's z_clean_context: a complete store with one serves a run without context (the array
    # is simply unused, and the encoder is the same, so Dagster's latent_store asset lands on this very store);
    # an incomplete one is not resumed without it (its blocks would be marked done with z_clean_context unwritten)
    if have != need and not (need == 0 and meta.get("complete")):
        raise LatentStoreError(f"latent store {store.url}: its context encoding is for context_frames="
                               f"{have} (0: none, a store written before z_clean_context), "
                               f"this extraction needs {need}; delete the store to re-encode "
                               "it (or pass overwrite=True)")


def _blocks(samples: Iterator[Sample], sizes: list[int], where: str) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    for size in sizes:
        chunk = [s for _, s in zip(range(size), samples)]
        if len(chunk) != size:
            raise ValueError(f"{where}: the shards ended early ({len(chunk)} of {size} samples in the last block)")
        yield (np.stack([s.image for s in chunk]), np.array([s.label for s in chunk], dtype=np.int64),
               [s.key for s in chunk])


def extract_latents(shard_url: str, split: str, store_url: str, encode_fn: EncodeFn, meta: dict[str, Any],
                    **kwargs) -> LatentStore:
    """Encode every sample of `split` into the store at `store_url` and return it, complete
    (`_extract_latents` has the arguments). One extraction per store: a local store is locked
    (`<store>.lock`) for the whole run, and every block write checks that the store is still the
    one this run created or opened, so a store recreated under it is never finished with a mixture."""
    so = kwargs.get("store_storage_options", kwargs.get("storage_options"))
    fs, path = url_to_fs(store_url, so)
    if distributed.world().is_main:
        with local_writer_lock(fs, path, f"latent store {store_url}"):
            return _extract_latents(shard_url, split, store_url, encode_fn, meta, **kwargs)
    return _extract_latents(shard_url, split, store_url, encode_fn, meta, **kwargs)


def _same_store(store_url: str, storage_options, creation_id: Optional[str]) -> None:
    """LatentStoreError when the store at store_url is no longer the one with `creation_id`."""
    now = open_store(store_url, storage_options=storage_options, allow_incomplete=True).meta.get("creation_id")
    if now != creation_id:
        raise LatentStoreError(f"latent store {store_url} was recreated by another process while this extraction "
                               f"wrote it (creation {creation_id} -> {now}); stopping without finishing it. "
                               "Re-run the extraction alone.")


def _extract_latents(shard_url: str, split: str, store_url: str, encode_fn: EncodeFn, meta: dict[str, Any], *,
                    block_size: int = 1024, batch_size: int = 256, dtype: str = "float32",
                    storage_options: StorageOptions = None, store_storage_options: StorageOptions = None,
                    progress: Optional[Callable[[int, int], None]] = None, overwrite: bool = False) -> LatentStore:
    """Encode every sample of `split` into the store at `store_url` and return it, complete.

    `encode_fn(images uint8 (B, C, H, W)) -> z_clean (B, c, h, w)` is the caller's Stage-1 encoder
    (device placement and scaling are its business). `meta` holds encoder_sha256, stage1_config
    and logsnr_0 (+ any JSON-able extras); dataset_manifest_sha256 and split are added here.
    Resumes an incomplete store of the same encoder and dataset; a complete one is returned
    untouched; another encoder's store raises unless `overwrite`. A zarr group without the `ul`
    attribute (a crash inside `create_store`) is recreated, with a warning. `progress(samples_done, total)`
    is called after each block. `store_storage_options` defaults to `storage_options`.
    """
    t0 = time.perf_counter()
    store_so = storage_options if store_storage_options is None else store_storage_options
    manifest = read_manifest(shard_url, storage_options)
    num_samples = manifest.num_samples(split)
    if num_samples == 0:
        raise ValueError(f"{shard_url}: split '{split}' has no samples to extract")
    want = {**meta, "dataset_manifest_sha256": manifest.sha256, "split": split, "num_samples": num_samples,
            "block_size": block_size, "dtype": dtype}
    if "encoder_sha256" not in want:
        raise LatentStoreError(f"latent store {store_url}: meta needs 'encoder_sha256'")

    store: Optional[LatentStore] = None
    w = distributed.world()
    if store_exists(store_url, store_so) and not overwrite:
        if store_lacks_meta(store_url, store_so):  # nothing in it was written by extraction: start afresh
            if w.is_main:
                warnings.warn(f"latent store {store_url}: zarr group without the 'ul' attribute (its creation "
                              f"was interrupted); recreating it", RuntimeWarning, stacklevel=2)
        else:
            store = open_store(store_url, storage_options=store_so, allow_incomplete=True, read_only=False)
            _check_compatible(store, want)
            if store.meta["complete"]:
                return store
    num_blocks = math.ceil(num_samples / block_size)
    with distributed.main_first() as is_main:  # rank 0 creates the store; the others open it after
        if store is None and is_main:
            first = next(iter_split(shard_url, split, storage_options=storage_options, manifest=manifest))
            probe = _encode_block(encode_fn, np.array(first.image[None]), 1, f"{store_url} (shape probe)")
            meta_out = {k: v for k, v in want.items() if k not in ("num_samples", "block_size", "dtype")}
            extra = tuple(k for k in probe if k not in ("z_clean", "z_logvar"))
            store = create_store(store_url, num_samples, tuple(probe["z_clean"].shape[1:]), dtype, block_size,
                                 meta_out, storage_options=store_so, overwrite=True,
                                 with_logvar="z_logvar" in probe, extra_latents=extra)
    if store is None:
        store = open_store(store_url, storage_options=store_so, allow_incomplete=True, read_only=False)
    creation_id = store.meta.get("creation_id")
    mine = np.array_split(np.arange(num_blocks), w.size)[w.rank]  # this rank's contiguous range
    done = store.done_blocks()
    report = progress if w.is_main else None

    def samples_done() -> int:
        return int(sum(min(block_size, num_samples - b * block_size) for b in mine if done[b]))
    if report is not None and done[mine].any():
        report(samples_done(), num_samples)

    pending = [int(b) for b in mine if not done[b]]
    while pending:
        run = [pending.pop(0)]  # a run of consecutive pending blocks, read in one pass
        while pending and pending[0] == run[-1] + 1:
            run.append(pending.pop(0))
        sizes = [min(block_size, num_samples - b * block_size) for b in run]
        samples = iter_split(shard_url, split, start=run[0] * block_size, storage_options=storage_options,
                             manifest=manifest)
        for b, (images, labels, keys) in zip(run, _blocks(samples, sizes, f"{shard_url} split '{split}'")):
            zs = _encode_block(encode_fn, images, batch_size, f"{store_url} block {b} (samples {keys[0]}..{keys[-1]})")
            z, z_logvar = zs.pop("z_clean"), zs.pop("z_logvar", None)
            _same_store(store_url, store_so, creation_id)
            store.write_block(b, z, labels, keys, z_logvar, extra=zs)
            done[b] = True
            if report is not None:
                report(samples_done(), num_samples)
    distributed.barrier()  # every rank's blocks are written
    if w.is_main:
        _same_store(store_url, store_so, creation_id)
        seconds = float(store.meta.get("encode_seconds") or 0.0) + time.perf_counter() - t0
        store.group.attrs["ul"] = {**store.meta, "encode_seconds": seconds}  # summed over resumed runs
        finalize_store(store)
    distributed.barrier()  # complete, once
    return store if w.is_main else open_store(store_url, storage_options=store_so)
