"""Data and storage: dataset shards (WebDataset tars via fsspec), their loaders, and the Zarr latent store.

sources -> shards (write_shards) -> loader (train stream / one-pass reads) -> extract (encoder ->
latent_store) -> latent_dataset (Stage-2 batches). Every URL may be local or any fsspec URL (s3://);
credentials travel as `storage_options`.
"""

from .extract import extract_latents
from .fashion_mnist import IdxFormatError, load_fashion_mnist
from .latent_dataset import LatentBatches, latent_loader
from .latent_store import LatentStore, LatentStoreError, create_store, finalize_store, open_store
from .loader import ShardStream, iter_split, load_split_tensor, train_loader
from .shards import ShardError, ShardManifest, read_manifest, write_shards
from .sources import (ArraySource, ImageFolderSource, Sample, ShardSource, build_source,
                      fashion_mnist_source)

__all__ = [
    "ArraySource", "IdxFormatError", "ImageFolderSource", "LatentBatches", "LatentStore",
    "LatentStoreError", "Sample", "ShardError", "ShardManifest", "ShardSource", "ShardStream",
    "build_source", "create_store", "extract_latents", "fashion_mnist_source", "finalize_store",
    "iter_split", "latent_loader", "load_fashion_mnist", "load_split_tensor", "open_store",
    "read_manifest", "train_loader", "write_shards",
]
