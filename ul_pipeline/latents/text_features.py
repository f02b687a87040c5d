"""Text features beside the latents: a frozen text encoder's output per caption, encoded once, in the latent store.

A store of captioned shards gets one sub-group per text encoder, named by 16 hex of the sha256 of its
weights, so the features of another encoder never mix in (each encoder has its own group, and a
reader names the one it wants):

    text_features/<sha256[:16]>/
      token_states (N, T, D) float32   dims (sample, token, feature): the last layer per token
      mask         (N, T) bool         dims (sample, token): True on real tokens, T = the longest caption
      pooled       (N, D) float32      dims (sample, feature): masked mean of token_states, unit norm
      captions     (N,) string         dims (sample,): the captions encoded, in the store's sample order
      attrs["ul_text"]  {text_encoder_sha256, text_encoder, dim, tokens, num_samples, dataset_manifest_sha256,
                         split, complete, created_at, encode_seconds}

Rows follow the store's `keys` and are chunked like its latents (`block_size` samples). `complete`
turns True last; an incomplete group is rewritten. The metadata is consolidated again afterwards.
"""

from __future__ import annotations

import time
import warnings
from datetime import datetime, timezone
from typing import Callable, Optional

import numpy as np
import zarr

from ul_pipeline.data.loader import iter_split
from ul_pipeline.data.manifest import read_manifest
from ul_pipeline.data.storage import StorageOptions, local_writer_lock, url_to_fs
from ul_pipeline.latents.store import LatentStoreError, open_store, zarr_store

TEXT_GROUP = "text_features"
TEXT_DIMS = {"token_states": ("sample", "token", "feature"), "mask": ("sample", "token"),
             "pooled": ("sample", "feature"), "captions": ("sample",)}


def text_group_name(text_encoder_sha256: str) -> str:
    """`text_features/<16 hex>`: where a store keeps the features of the encoder with these weights."""
    return f"{TEXT_GROUP}/{text_encoder_sha256[:16]}"


def open_text_features(store_url: str, text_encoder_sha256: str, *,
                       storage_options: StorageOptions = None) -> zarr.Group:
    """The complete text-feature group of this encoder in the store at `store_url`; LatentStoreError
    naming the encoders the store does have when it is absent, incomplete or of other weights."""
    store = open_store(store_url, storage_options=storage_options)
    name = text_group_name(text_encoder_sha256)
    have = sorted(store.group[TEXT_GROUP].group_keys()) if TEXT_GROUP in store.group else []
    group = store.group[name] if text_encoder_sha256[:16] in have else None
    meta = dict(group.attrs.get("ul_text", {})) if group is not None else {}
    if meta.get("text_encoder_sha256") != text_encoder_sha256 or not meta.get("complete"):
        raise LatentStoreError(f"latent store {store_url}: no complete text features of text encoder "
                               f"{text_encoder_sha256[:16]} (it has: {', '.join(have) or 'none'}); "
                               "encode them with ensure_text_features")
    return group


def stored_captions(store, text_encoder_sha256: str, rows: slice = slice(None)):
    """Rows of an opened store's text features of this encoder as a `TextCondition` (pooled, token states, mask)."""
    from ul_pipeline.nets.text_base import TextCondition
    import torch

    group = open_text_features(store.url, text_encoder_sha256, storage_options=store.storage_options)
    read = lambda name: torch.from_numpy(np.asarray(group[name][rows]))  # noqa: E731
    return TextCondition(read("pooled").float(), read("token_states").float(), read("mask").bool())


def read_captions(shards_url: str, split: str, keys: list[str], storage_options: StorageOptions = None) -> list[str]:
    """The captions of `split` in manifest order (= the latent store's order), checked against its `keys`."""
    captions = []
    for i, s in enumerate(iter_split(shards_url, split, storage_options=storage_options)):
        if i >= len(keys) or s.key != keys[i]:
            raise LatentStoreError(f"shards {shards_url} split '{split}': sample {i} is '{s.key}', the latent "
                                   f"store has '{keys[i] if i < len(keys) else None}' there")
        if s.caption is None:
            raise LatentStoreError(f"shards {shards_url}: sample '{s.key}' has no caption (<key>.txt)")
        captions.append(s.caption)
    if len(captions) != len(keys):
        raise LatentStoreError(f"shards {shards_url} split '{split}': {len(captions)} samples, store {len(keys)}")
    return captions


def ensure_text_features(store_url: str, shards_url: str, encoder, *, storage_options: StorageOptions = None,
                         store_storage_options: StorageOptions = None, batch_size: int = 256,
                         progress: Optional[Callable[[int, int], None]] = None,
                         warn: Optional[Callable[[str], None]] = None) -> zarr.Group:
    """The text features of `encoder` (a `ul_pipeline.text.TextEncoder`) for every sample of the complete
    store at `store_url`, captions read from the shards it was extracted from; encoded and written
    only when the store lacks a complete group of this encoder (a cache: encoding happens once). Captions over
    the encoder's token limit are cut to it, with one warning through `warn` (default: printed)."""
    so = storage_options if store_storage_options is None else store_storage_options
    try:
        return open_text_features(store_url, encoder.sha256, storage_options=so)
    except LatentStoreError:
        pass
    store = open_store(store_url, storage_options=so)  # complete, or this raises
    meta = store.meta
    manifest = read_manifest(shards_url, storage_options)
    if manifest.sha256 != meta["dataset_manifest_sha256"]:
        raise LatentStoreError(f"latent store {store_url} was extracted from shards with manifest "
                               f"{meta['dataset_manifest_sha256'][:12]}, not {shards_url} ({manifest.sha256[:12]})")
    fs, path = url_to_fs(store_url, so)
    with local_writer_lock(fs, path, f"latent store {store_url}"):
        try:  # another writer may have finished between our first look and the lock
            return open_text_features(store_url, encoder.sha256, storage_options=so)
        except LatentStoreError:
            pass
        keys = store.key_list()
        captions = read_captions(shards_url, meta["split"], keys, storage_options)
        long = getattr(encoder, "over_limit", lambda _: [])(captions)
        if long:
            i, n = max(long, key=lambda item: item[1])
            (warn or (lambda m: print(f"WARNING: {m}")))(
                f"{len(long)} of {len(captions)} captions are over the text encoder's limit of {encoder.max_length} "
                f"tokens and are cut to it (the longest, sample '{keys[i]}', has {n})")
        return _write(store_url, so, encoder, captions, meta, batch_size, progress)


def _write(store_url: str, so: StorageOptions, encoder, captions: list[str], meta: dict, batch_size: int,
           progress) -> zarr.Group:
    t0, n, block = time.perf_counter(), len(captions), int(meta["block_size"])
    tokens = encoder.num_tokens(captions)
    root = zarr.open_group(zarr_store(store_url, so), mode="r+", zarr_format=3, use_consolidated=False)
    group = root.require_group(TEXT_GROUP).create_group(encoder.sha256[:16], overwrite=True)
    arrays = {"token_states": ((n, tokens, encoder.dim), "float32", float("nan")),
              "mask": ((n, tokens), "bool", False), "pooled": ((n, encoder.dim), "float32", float("nan")),
              "captions": ((n,), str, "")}
    for name, (shape, dtype, fill) in arrays.items():
        group.create_array(name, shape=shape, chunks=(block, *shape[1:]), dtype=dtype, fill_value=fill,
                           dimension_names=TEXT_DIMS[name])
    ul_text = {"text_encoder_sha256": encoder.sha256, "text_encoder": encoder.name, "dim": encoder.dim,
               "tokens": tokens, "num_samples": n, "dataset_manifest_sha256": meta["dataset_manifest_sha256"],
               "split": meta["split"], "complete": False,
               "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    group.attrs["ul_text"] = ul_text
    for lo in range(0, n, block):  # one chunk per write
        hi = min(lo + block, n)
        parts = [encoder.encode(captions[a:min(a + batch_size, hi)], tokens) for a in range(lo, hi, batch_size)]
        group["token_states"][lo:hi] = np.concatenate([p.token_states.numpy() for p in parts])
        group["mask"][lo:hi] = np.concatenate([p.mask.numpy() for p in parts])
        group["pooled"][lo:hi] = np.concatenate([p.pooled.numpy() for p in parts])
        group["captions"][lo:hi] = np.array(captions[lo:hi], dtype=str)
        if progress is not None:
            progress(hi, n)
    group.attrs["ul_text"] = {**ul_text, "complete": True, "encode_seconds": time.perf_counter() - t0}  # LAST
    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec" (zarr-python reads it)
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(root.store)
    return open_text_features(store_url, encoder.sha256, storage_options=so)
