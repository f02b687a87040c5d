"""Small data sets whose samples say who they are: images and latents that carry their own index.

A streamed batch can then be checked row by row: which samples it holds, and that every array of a
row (labels, z_logvar, the hflip latent) belongs to the same sample.
"""

from __future__ import annotations

import numpy as np

from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources import ArraySource
from ul_pipeline.latents.store import create_store, finalize_store

LATENT_SHAPE = (4, 8, 8)  # the tiny preset's latents of 1x32x32 images
STORE_META = {"encoder_sha256": "e" * 64, "stage1_config": {"preset": "tiny"}, "logsnr_0": 5.0,
              "dataset_manifest_sha256": "d" * 64, "split": "train"}


def indexed_images(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 1, 32, 32) noise images whose first two pixels hold the index (i // 256, i % 256)."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 1, 32, 32), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return images


def image_index(images) -> list[int]:
    """The indices written by `indexed_images`, from a batch (B, 1, 32, 32)."""
    x = np.asarray(images).astype(np.int64)
    return (x[:, 0, 0, 0] * 256 + x[:, 0, 0, 1]).tolist()


def write_indexed_shards(url: str, n: int = 400, *, val_size: int = 80, shard_size: int = 40,
                         storage_options=None):
    """Shards of `indexed_images(n)` (labels i % 10); 320 train samples in 8 shards by default."""
    source = ArraySource(indexed_images(n), np.arange(n) % 10, [f"img-{i:05d}" for i in range(n)],
                         resolution=32, channels=1)
    return write_shards(source, url, shard_size=shard_size, val_size=val_size, seed=0, resolution=32, channels=1,
                        num_classes=10, storage_options=storage_options)


def write_indexed_store(url: str, n: int = 320, *, block_size: int = 40, logvar: bool = True, hflip: bool = True,
                        storage_options=None):
    """A complete latent store whose sample i has z_clean = i / 1000, z_logvar = -z_clean / 1000 and
    z_clean_hflip = z_clean + 0.5 everywhere (float32), and label i % 10 (the optional arrays only when asked)."""
    store = create_store(url, n, LATENT_SHAPE, "float32", block_size, STORE_META, storage_options=storage_options,
                         with_logvar=logvar, extra_latents=("z_clean_hflip",) if hflip else ())
    for b in range(store.num_blocks):
        rows = np.arange(n)[store.block_slice(b)]
        z = np.broadcast_to((rows / 1000)[:, None, None, None], (len(rows), *LATENT_SHAPE)).astype(np.float32)
        store.write_block(b, z, rows % 10, [f"img-{i:05d}" for i in rows], z_logvar=-z / 1000 if logvar else None,
                          extra={"z_clean_hflip": z + 0.5} if hflip else None)
    return finalize_store(store)


def latent_index(z) -> list[int]:
    """The sample indices of a batch of `write_indexed_store` latents (B, C, h, w)."""
    return np.rint(np.asarray(z)[:, 0, 0, 0].astype(np.float64) * 1000).astype(np.int64).tolist()
