"""Streamed batches of both stages: 2 ranks x 2 DataLoader workers see every sample of an epoch exactly once,
S3 streams what local storage streams, and the checkpointed position refuses a resume it cannot continue."""

import gc

import pytest
import torch

from ul_pipeline.data.loader import ShardReader, load_split_tensor
from ul_pipeline.distributed import World
from ul_pipeline.latents.dataset import BlockReader
from ul_pipeline.latents.store import LatentStoreError, open_store
from ul_pipeline.train.checkpoint import CheckpointError
from ul_pipeline.train.streamed import StreamedBatches
from tests.synthetic import image_index, latent_index, write_indexed_shards, write_indexed_store

EPOCH = 320  # train samples of both synthetic data sets: 8 shards / 8 blocks of 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    write_indexed_shards(str(root / "shards"))
    write_indexed_store(str(root / "latents.zarr"))
    return root


def readers(data, stage, storage_options=None, root=None):
    """(the stage's unit reader, batch -> sample indices, the indices of the train split)."""
    root = root or str(data)
    if stage == "stage1":
        train = image_index(load_split_tensor(f"{root}/shards", "train", storage_options=storage_options)[0])
        return ShardReader(f"{root}/shards", storage_options=storage_options), image_index, sorted(train)
    store = open_store(f"{root}/latents.zarr", storage_options=storage_options)
    return BlockReader(store, 10), latent_index, list(range(EPOCH))


def take(source: StreamedBatches, n: int, start: int = 0) -> list[tuple[torch.Tensor, ...]]:
    it = source(start)
    out = [next(it) for _ in range(n)]
    del it
    gc.collect()  # stop the DataLoader workers here
    return out


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_two_ranks_with_two_workers_each_see_every_sample_of_an_epoch_once(data, stage):
    reader, index, train = readers(data, stage)
    assert len(train) == EPOCH
    batch, steps = 32, EPOCH // 32  # 10 global steps make one epoch
    per_rank = []
    for rank in (0, 1):
        source = StreamedBatches(reader, batch_size=batch, seed=0, shuffle_buffer=60, workers=2,
                                 world=World(rank, 2))
        got = take(source, 2 * steps)
        assert all(len(b[0]) == batch // 2 for b in got)
        per_rank.append([index(b[0]) for b in got])
    for epoch in (0, 1):
        rows = [i for r in per_rank for b in r[epoch * steps:(epoch + 1) * steps] for i in b]
        assert sorted(rows) == train, epoch  # all of them, none twice
    assert per_rank[0][:steps] != per_rank[0][steps:]  # the next epoch in another order


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_streaming_from_s3_makes_the_batches_local_storage_makes(data, stage, s3_server):
    so = s3_server.storage_options
    root = s3_server.url("streamed")
    if stage == "stage1":
        write_indexed_shards(f"{root}/shards", storage_options=so)
    else:
        write_indexed_store(f"{root}/latents.zarr", storage_options=so)
    kw = dict(batch_size=16, seed=3, shuffle_buffer=50, workers=2, world=World(0, 1))
    remote = take(StreamedBatches(readers(data, stage, so, root)[0], **kw), 25)  # forked workers read S3
    local = take(StreamedBatches(readers(data, stage)[0], **kw), 25)
    assert all(torch.equal(a, b) for ra, rb in zip(remote, local) for a, b in zip(ra, rb))


def test_the_checkpointed_position_names_the_layout_and_refuses_another(data):
    reader = readers(data, "stage2")[0]
    source = StreamedBatches(reader, batch_size=32, seed=0, shuffle_buffer=60, workers=2, world=World(0, 1))
    saved = source.position(96)  # step 3: reader 0 made steps 0 and 2, reader 1 step 1
    assert saved["source"] == "stream" and (saved["ranks"], saved["workers"]) == (1, 2)
    made = [source.plan.locate(0, 64), source.plan.locate(1, 32)]  # samples each reader has made
    assert saved["readers"] == [[w.epoch, w.index, offset] for w, offset in made]
    source.check_position(saved, "run/last.pt")  # the same layout continues
    other = StreamedBatches(reader, batch_size=32, seed=0, shuffle_buffer=60, workers=1, world=World(0, 1))
    with pytest.raises(CheckpointError, match=r"run/last.pt exactly: .* 1 rank\(s\) x compute.workers=2, this run has 1 x 1"):
        other.check_position(saved, "run/last.pt")
    moved = {**saved, "readers": [[0, 0, 5], [0, 0, 7]]}
    with pytest.raises(CheckpointError, match="positions it saved differ"):
        source.check_position(moved, "run/last.pt")
    with pytest.raises(CheckpointError, match="holds no streaming loader position"):
        source.check_position(None, "run/last.pt")


def test_a_damaged_loader_position_is_a_checkpoint_error_not_a_key_error(data):
    """A checkpoint whose `loader` lacks keys (hand-edited, or from other code) used to raise KeyError('ranks')."""
    source = StreamedBatches(readers(data, "stage2")[0], batch_size=32, seed=0, shuffle_buffer=60, workers=0,
                             world=World(0, 1))
    with pytest.raises(CheckpointError, match="lacks ranks, workers, readers"):
        source.check_position({"source": "stream", "samples_seen": 32}, "run/last.pt")


def test_a_resume_on_a_store_encoded_again_with_other_blocks_is_refused(tmp_path):
    """The same samples in blocks of 80, not 40: another order. With one reader and a window over the whole
    epoch the saved reader position ([0, 0, 48]) is the same on both stores, so it used to resume silently
    and end with other weights than an uninterrupted run."""
    write_indexed_store(str(tmp_path / "a.zarr"), block_size=40)
    write_indexed_store(str(tmp_path / "b.zarr"), block_size=80)
    kw = dict(batch_size=16, seed=0, shuffle_buffer=10_000, workers=0, world=World(0, 1))
    saved = StreamedBatches(BlockReader(open_store(str(tmp_path / "a.zarr")), 10), **kw).position(48)
    again = StreamedBatches(BlockReader(open_store(str(tmp_path / "b.zarr")), 10), **kw)
    assert again.position(48)["readers"] == saved["readers"]
    with pytest.raises(CheckpointError, match=r"run/last.pt exactly: its streamed batches followed another plan"):
        again.check_position(saved, "run/last.pt")
    legacy = {k: v for k, v in saved.items() if k != "plan"}  # a checkpoint from before the plan was recorded
    StreamedBatches(BlockReader(open_store(str(tmp_path / "a.zarr")), 10), **kw).check_position(legacy, "run/last.pt")


def test_a_damaged_chunk_is_refused_naming_the_store_array_and_rows(tmp_path):
    """A chunk of garbage bytes (not a missing one, which reads as NaN) used to raise the codec's bare
    'RuntimeError: Zstd decompression error: invalid input data', naming neither store nor block."""
    url = str(tmp_path / "latents.zarr")
    write_indexed_store(url)
    (tmp_path / "latents.zarr" / "z_clean" / "c" / "2" / "0" / "0" / "0").write_bytes(b"garbage" * 10)
    source = StreamedBatches(BlockReader(open_store(url), 10), batch_size=16, seed=0, shuffle_buffer=50, workers=0,
                             world=World(0, 1))
    with pytest.raises(LatentStoreError, match=r"latent store .*latents.zarr: array z_clean rows \[80, 120\) is "
                                               r"unreadable \(RuntimeError: .*\), a damaged chunk"):
        take(source, 20)
