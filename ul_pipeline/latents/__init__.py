"""Latents: the Stage-1 encoder's outputs cached once in a Zarr v3 store and read by any number of base models.

`extract.py` encodes a shard set into a store (resumable, block by block, rank-sharded), `store.py`
creates, finalizes and opens stores (named dimensions, self-describing attributes), and
`dataset.py` streams Stage-2 batches from a store.
"""

from ul_pipeline.latents.dataset import LatentBatches, latent_loader
from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.latents.store import LatentStore, LatentStoreError, create_store, finalize_store, open_store

__all__ = ["LatentBatches", "LatentStore", "LatentStoreError", "create_store", "extract_latents", "finalize_store",
           "latent_loader", "open_store"]
