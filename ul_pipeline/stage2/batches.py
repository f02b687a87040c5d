"""Stage 2's batches: a latent store's arrays in memory (data.in_memory: true, the default) or streamed by block.

Both sources yield the same fields (`stage2_fields`): every per-sample array of the store under the
names `sample_arrays` gives (z_clean, labels, then z_clean_context, z_clean_hflip, z_logvar and any
conditioning), as float32 / int64, except z_clean_context unless the base model predicts frames from
a context, plus a text model's caption features (`text_fields`; the mask as int64); both refuse
non-finite latents and labels outside [0, data.num_classes). Streaming reads the store's blocks from
local or S3 storage (ul_pipeline.train.streamed) with block-level and window shuffling from
stage2.train.seed, a window of data.shuffle_buffer samples and compute.workers DataLoader workers.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ul_pipeline.latents.dataset import BlockReader, check_rows, read_rows, sample_arrays
from ul_pipeline.latents.store import LatentStore, LatentStoreError
from ul_pipeline.stage2.text_conditioned import text_fields
from ul_pipeline.train.batch_source import BatchSource
from ul_pipeline.train.runtime import share_of
from ul_pipeline.train.streamed import StreamedBatches


def stage2_fields(cfg: DictConfig, store: LatentStore) -> tuple[str, ...]:
    """What a Stage-2 batch of `cfg` on `store` holds: the store's sample arrays, z_clean_context only for
    stage2.context_frames > 0, where the store must hold it for that context (a LatentStoreError naming the
    store otherwise: a store written before it, or for another context_frames), and for a text model
    (stage2.text_conditioning) the current text encoder's features of the captions (their paths in the store,
    `text_features/<sha256[:16]>/...`; a LatentStoreError naming the store and that group when it has none)."""
    text = cfg.stage2.get("text_conditioning", "none")
    if text == "none":
        return _latent_fields(cfg, store)
    from ul_pipeline.text.encoder import text_encoder_sha256

    return (*_latent_fields(cfg, store), *text_fields(text, store, text_encoder_sha256()))


def _latent_fields(cfg: DictConfig, store: LatentStore) -> tuple[str, ...]:
    fields = sample_arrays(store)
    context_frames = int(cfg.stage2.get("context_frames", 0))
    if not context_frames:
        return tuple(f for f in fields if f != "z_clean_context")
    if store.z_clean_context is None or store.meta.get("context_frames") != context_frames:
        have = "no z_clean_context" if store.z_clean_context is None else \
            f"z_clean_context for context_frames={store.meta.get('context_frames')}"
        raise LatentStoreError(f"latent store {store.url} has {have}, and stage2.context_frames={context_frames} "
                               "trains on the context as sampling encodes it (the clip padded after its context "
                               "frames), not on the whole clip's latents: delete the store and encode again")
    return fields


def stage2_batches(cfg: DictConfig, store: LatentStore) -> BatchSource:
    """The store's samples as data.in_memory says: read whole into RAM, or streamed block by block."""
    tc, fields = cfg.stage2.train, stage2_fields(cfg, store)
    if cfg.data.in_memory:
        arrays = {name: read_rows(store, name) for name in fields}
        check_rows(store.url, arrays, cfg.data.num_classes)
        return share_of(tc, *(torch.from_numpy(a) for a in arrays.values()), fields=fields)
    return StreamedBatches(BlockReader(store, cfg.data.num_classes, fields), batch_size=tc.batch_size, seed=tc.seed,
                           shuffle_buffer=cfg.data.shuffle_buffer, workers=cfg.compute.workers)
