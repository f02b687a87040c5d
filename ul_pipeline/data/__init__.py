"""Data: sources -> dataset shards (WebDataset tars + a Parquet manifest via fsspec) -> loaders.

`sources/` yields `Sample`s (sample.py), `codecs.py` turns pixels into bytes and back, `shards.py`
writes the deterministic train/val split, `manifest.py` describes a shard set, `loader.py` reads it
(one-pass reads; shards as the Stage-1 stream's units), `stream_plan.py` and `streaming.py` stream
any data set read in units (shards, latent-store blocks), `augment.py` flips, `storage.py` resolves
local and s3:// URLs. Every URL may be local or any fsspec URL; credentials travel as `storage_options`. The latent
store built from shards lives in `ul_pipeline.latents`.
"""

from ul_pipeline.data.fashion_mnist import IdxFormatError, load_fashion_mnist
from ul_pipeline.data.loader import ShardReader, iter_split, load_split_tensor
from ul_pipeline.data.manifest import ShardError, ShardManifest, read_manifest
from ul_pipeline.data.sample import Sample
from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources import ArraySource, ImageFolderSource, ShardSource, build_source, fashion_mnist_source

__all__ = [
    "ArraySource", "IdxFormatError", "ImageFolderSource", "Sample", "ShardError", "ShardManifest", "ShardSource",
    "ShardReader", "build_source", "fashion_mnist_source", "iter_split", "load_fashion_mnist", "load_split_tensor",
    "read_manifest", "write_shards",
]
