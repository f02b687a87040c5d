"""Stage 2's batches carry every per-sample array of the store, row-aligned, in memory and streamed alike."""

import gc

import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.latents.store import open_store
from ul_pipeline.stage2.batches import stage2_batches
from tests.synthetic import latent_index, write_indexed_store


def batches_of(url: str, in_memory: bool, n: int = 12, workers: int = 0):
    cfg = load_config("smoke", [f"data.in_memory={in_memory}", f"compute.workers={workers}",
                                "stage2.train.batch_size=16", "data.shuffle_buffer=50"])
    source = stage2_batches(cfg, open_store(url))
    it = source(0)
    out = [source.named(next(it)) for _ in range(n)]
    del it
    gc.collect()
    return source.fields, out


@pytest.mark.parametrize("in_memory, workers", [(False, 0), (False, 2), (True, 0)])
def test_streamed_batches_carry_z_logvar_and_the_hflip_pair_of_each_row(tmp_path, in_memory, workers):
    url = str(tmp_path / "latents.zarr")
    write_indexed_store(url)
    fields, batches = batches_of(url, in_memory, workers=workers)
    assert fields == ("z_clean", "labels", "z_clean_hflip", "z_logvar")
    for b in batches:
        rows = torch.tensor(latent_index(b["z_clean"]))
        assert b["z_clean"].dtype == b["z_logvar"].dtype == b["z_clean_hflip"].dtype == torch.float32
        assert b["labels"].dtype == torch.int64 and torch.equal(b["labels"], rows % 10)
        assert torch.equal(b["z_clean_hflip"], b["z_clean"] + 0.5)  # the same sample's mirror
        assert torch.equal(b["z_logvar"], -b["z_clean"] / 1000)  # and its variance
        assert rows.unique().numel() == len(rows) == 16


def test_a_store_without_them_gives_latents_and_labels_alone(tmp_path):
    url = str(tmp_path / "plain.zarr")
    write_indexed_store(url, logvar=False, hflip=False)
    for in_memory in (True, False):
        fields, batches = batches_of(url, in_memory, n=2)
        assert fields == ("z_clean", "labels") and set(batches[0]) == {"z_clean", "labels"}
