"""Stage 1's batches: the train split in memory (data.in_memory: true, the default) or streamed from its shards.

Both sources yield batches of IMAGE_FIELDS (uint8 images or clips); streaming reads the shards from
local or S3 storage (ul_pipeline.train.streamed) with shard-level and window shuffling from
stage1.train.seed, a window of data.shuffle_buffer samples and compute.workers DataLoader workers.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import Tensor

from ul_pipeline import config as config_lib
from ul_pipeline.data.loader import IMAGE_FIELDS, ShardReader, load_split_tensor
from ul_pipeline.data.storage import StorageOptions
from ul_pipeline.train.batch_source import BatchSource
from ul_pipeline.train.runtime import share_of
from ul_pipeline.train.streamed import StreamedBatches


def in_memory_batches(cfg: DictConfig, images: Tensor) -> BatchSource:
    """This rank's batches of uint8 images (N, C, H, W) held in RAM, after checking their shape against the config."""
    expected = config_lib.sample_shape(cfg.data)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"stage 1 images have shape {tuple(images.shape[1:])}, config data.channels/"
                         f"data.frames/data.resolution expect {expected}")
    return share_of(cfg.stage1.train, images, fields=IMAGE_FIELDS)


def stage1_batches(cfg: DictConfig, shards_url: str, *, storage_options: StorageOptions = None) -> BatchSource:
    """The train split of `shards_url` as data.in_memory says: loaded into RAM, or streamed."""
    if cfg.data.in_memory:
        images, _, _ = load_split_tensor(shards_url, "train", storage_options=storage_options)
        return in_memory_batches(cfg, images)
    tc = cfg.stage1.train
    return StreamedBatches(ShardReader(shards_url, "train", storage_options=storage_options),
                           batch_size=tc.batch_size, seed=tc.seed, shuffle_buffer=cfg.data.shuffle_buffer,
                           workers=cfg.compute.workers)
