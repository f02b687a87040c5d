"""A latent store is never finished as a mixture of two extractions, and a damaged 'complete' store is refused."""

from pathlib import Path

import pytest

from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.storage import ArtifactBusy, exclusive_lock
from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.latents.store import LatentStoreError, create_store, open_store
from tests.latents.test_store import EXTRACT, META, SHARDING, toy_encoder


@pytest.fixture(scope="module")
def shards(tmp_path_factory, fmnist_400_source):
    url = str(tmp_path_factory.mktemp("shards") / "fmnist")
    write_shards(fmnist_400_source, url, **SHARDING)
    return url


def test_a_second_extraction_of_one_local_store_fails_at_once(tmp_path, shards):
    url = str(tmp_path / "latents.zarr")
    with exclusive_lock(str(tmp_path / ".latents.zarr.lock"), "the first extraction"):  # another process's extraction holds it
        with pytest.raises(ArtifactBusy, match=r"latent store .*latents\.zarr is in use"):
            extract_latents(shards, "train", url, toy_encoder, META, **EXTRACT)
    assert not Path(url).exists()
    assert open_store(extract_latents(shards, "train", url, toy_encoder, META, **EXTRACT).url).meta["complete"]


def test_a_store_recreated_under_an_extraction_is_never_finished_with_a_mixture(tmp_path, shards):
    """What two extractions without a shared lock (two machines, an object store) would do."""
    url = str(tmp_path / "latents.zarr")
    calls = {"n": 0}

    def encode_then_someone_recreates(x):
        calls["n"] += 1
        if calls["n"] == 4:  # mid-extraction, another writer replaces the store with its own
            create_store(url, 350, (4, 8, 8), "float32", 64, {**META, "encoder_sha256": "f" * 64,
                                                             "dataset_manifest_sha256": "x", "split": "train"},
                         overwrite=True)
        return toy_encoder(x)

    with pytest.raises(LatentStoreError, match="was recreated by another process"):
        extract_latents(shards, "train", url, encode_then_someone_recreates, META, **EXTRACT)
    assert not open_store(url, allow_incomplete=True).meta["complete"]


def test_a_complete_store_with_a_missing_chunk_is_refused_by_stage2_naming_it(tmp_path, shards):
    from ul_pipeline.config import load_config
    from ul_pipeline.lifecycle import run_stage2

    url = str(tmp_path / "latents.zarr")
    extract_latents(shards, "train", url, toy_encoder, META, **EXTRACT)
    chunk = next((Path(url) / "z_clean" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()  # the store still says complete
    block = int(chunk.relative_to(Path(url) / "z_clean" / "c").parts[0])  # chunk key c/<block>/0/0/0
    cfg = load_config("smoke", ["stage2.train.total_samples=32", "compute.precision=fp32"])
    with pytest.raises(LatentStoreError, match=r"latents\.zarr says complete but 64 samples have non-finite"):
        run_stage2(cfg, url, tmp_path / "stage2")
    streamed = load_config("smoke", ["stage2.train.total_samples=448", "compute.precision=fp32", "data.in_memory=false"])
    with pytest.raises(LatentStoreError, match=rf"latents\.zarr says complete but 64 samples in block {block} have non-finite"):
        run_stage2(streamed, url, tmp_path / "stage2_streamed")  # streamed: found when its block is read
