"""Latents: the Stage-1 encoder's outputs cached once in a Zarr v3 store and read by any number of base models.

`extract.py` encodes a shard set into a store (resumable, block by block, rank-sharded), `store.py`
creates, finalizes and opens stores (named dimensions, self-describing attributes), and
`dataset.py` says what a Stage-2 batch is and reads a store's blocks for streaming.
"""

from ul_pipeline.latents.dataset import BlockReader, sample_arrays
from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.latents.store import LatentStore, LatentStoreError, create_store, finalize_store, open_store

__all__ = ["BlockReader", "LatentStore", "LatentStoreError", "create_store", "extract_latents", "finalize_store",
           "open_store", "sample_arrays"]
