"""Stage 2's batches: a latent store's arrays in memory (data.in_memory: true, the default) or streamed by block.

Both sources yield every per-sample array of the store under the names `sample_arrays` gives
(z_clean, labels, then z_clean_hflip, z_logvar and any conditioning), as float32 / int64, and both
refuse non-finite latents and labels outside [0, data.num_classes). Streaming reads the store's
blocks from local or S3 storage (ul_pipeline.train.streamed) with block-level and window shuffling
from stage2.train.seed, a window of data.shuffle_buffer samples and compute.workers DataLoader workers.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ul_pipeline.latents.dataset import BlockReader, check_rows, read_rows, sample_arrays
from ul_pipeline.latents.store import LatentStore
from ul_pipeline.train.batch_source import BatchSource
from ul_pipeline.train.runtime import share_of
from ul_pipeline.train.streamed import StreamedBatches


def stage2_batches(cfg: DictConfig, store: LatentStore) -> BatchSource:
    """The store's samples as data.in_memory says: read whole into RAM, or streamed block by block."""
    tc = cfg.stage2.train
    if cfg.data.in_memory:
        fields = sample_arrays(store)
        arrays = [read_rows(store, name) for name in fields]
        check_rows(store.url, arrays[0], arrays[1], cfg.data.num_classes)
        return share_of(tc, *(torch.from_numpy(a) for a in arrays), fields=fields)
    return StreamedBatches(BlockReader(store, cfg.data.num_classes), batch_size=tc.batch_size, seed=tc.seed,
                           shuffle_buffer=cfg.data.shuffle_buffer, workers=cfg.compute.workers)
