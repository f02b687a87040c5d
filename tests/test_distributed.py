"""Data parallelism under torchrun with 2 gloo ranks on CPU: the same run as 1 rank, and fault tolerance.

Every run is a real `torchrun` (torch.distributed.run) of the CLI; tiny nets, 4 steps of the
smoke config, so each launch takes seconds. Stage 1 and extraction run in the default suite;
Stage 2, streaming (data.in_memory=false) and the SIGKILL tests (one machine; two torchrun agents as
two nodes) are marked slow (`pytest -m slow tests/test_distributed.py`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ul_pipeline import distributed
from ul_pipeline.latents.store import open_store
from ul_pipeline.data.shards import write_shards

REPO = Path(__file__).resolve().parents[1]
CPU = ["compute.device=cpu"]
STAGE1 = ["stage1.train.total_samples=128", "stage1.train.checkpoint_every_samples=64", *CPU]  # 4 steps of 32
STAGE2 = ["stage2.train.total_samples=128", "stage2.train.checkpoint_every_samples=64", *CPU]
ENCODE = ["encode.block_size=64", *CPU]  # 350 train samples -> 6 blocks, 3 per rank
TOLERANCE = 1e-5  # float summation order differs (DDP averages two half-batch gradients)


def run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "ul_pipeline", *args])


def torchrun(nproc: int, *args: str, module: bool = True, restarts: int = 0) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                f"--max-restarts={restarts}"]
    return run([*launcher, *(["-m", "ul_pipeline"] if module else []), *args])


def max_weight_difference(a: Path, b: Path) -> dict[str, float]:
    ca, cb = (torch.load(p / "last.pt", weights_only=False) for p in (a, b))
    assert ca["samples_seen"] == cb["samples_seen"]
    return {part: max((ca[part][k] - cb[part][k]).abs().max().item() for k in ca[part]) for part in ("model", "ema")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fmnist_400_source) -> Path:
    """Shards, then Stage 1 on 1 rank and on 2 ranks (the same config, global batch 32)."""
    root = tmp_path_factory.mktemp("dist")
    write_shards(fmnist_400_source, str(root / "shards"), shard_size=150, val_size=50, seed=0, resolution=32,
                 channels=1, num_classes=10)
    cli("stage1", "-e", "smoke", "--shards", str(root / "shards"), "--out", str(root / "s1_1rank"), *STAGE1)
    torchrun(2, "stage1", "-e", "smoke", "--shards", str(root / "shards"), "--out", str(root / "s1_2rank"), *STAGE1)
    return root


def test_stage1_on_two_ranks_equals_one_rank(runs):
    diff = max_weight_difference(runs / "s1_1rank", runs / "s1_2rank")
    assert diff["model"] < TOLERANCE and diff["ema"] < TOLERANCE, diff


def test_extraction_on_two_ranks_equals_one_rank(runs):
    ckpt = str(runs / "s1_1rank" / "last.pt")
    cli("encode", "-e", "smoke", "--checkpoint", ckpt, "--shards", str(runs / "shards"),
        "--out", str(runs / "l_1rank.zarr"), *ENCODE)
    torchrun(2, "encode", "-e", "smoke", "--checkpoint", ckpt, "--shards", str(runs / "shards"),
             "--out", str(runs / "l_2rank.zarr"), *ENCODE)
    a, b = open_store(str(runs / "l_1rank.zarr")), open_store(str(runs / "l_2rank.zarr"))
    assert a.num_blocks == 6 and b.done_blocks().all()
    assert np.array_equal(a.z_clean[:], b.z_clean[:]) and np.array_equal(a.labels[:], b.labels[:])
    assert a.key_list() == b.key_list()
    timing = ("created_at", "encode_seconds", "creation_id")  # when and which creation, not what
    assert ({k: v for k, v in a.meta.items() if k not in timing} == {k: v for k, v in b.meta.items() if k not in timing})
    assert b.meta["complete"] is True


@pytest.mark.slow  # ~25 s: three more launches
def test_stage2_on_two_ranks_equals_one_rank(runs):
    store = runs / "l_1rank.zarr"
    if not store.exists():
        cli("encode", "-e", "smoke", "--checkpoint", str(runs / "s1_1rank" / "last.pt"),
            "--shards", str(runs / "shards"), "--out", str(store), *ENCODE)
    cli("stage2", "-e", "smoke", "--latents", str(store), "--out", str(runs / "s2_1rank"), *STAGE2)
    torchrun(2, "stage2", "-e", "smoke", "--latents", str(store), "--out", str(runs / "s2_2rank"), *STAGE2)
    diff = max_weight_difference(runs / "s2_1rank", runs / "s2_2rank")
    assert diff["model"] < TOLERANCE and diff["ema"] < TOLERANCE, diff


@pytest.mark.slow  # ~20 s: two torchrun attempts
def test_a_rank_killed_mid_run_restarts_and_ends_with_the_uninterrupted_weights(runs):
    marker = runs / "killed.txt"
    torchrun(2, str(REPO / "tests" / "helpers" / "kill_rank_once.py"), str(marker), "96",
             "stage1", "-e", "smoke", "--shards", str(runs / "shards"), "--out", str(runs / "s1_killed"), *STAGE1,
             module=False, restarts=1)
    assert marker.read_text().startswith("rank 1 killed at samples_seen=96")  # it did die, after the 64 checkpoint
    diff = max_weight_difference(runs / "s1_2rank", runs / "s1_killed")
    assert diff["model"] < TOLERANCE and diff["ema"] < TOLERANCE, diff


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_node_torchrun(*args: str, restarts: int, timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents (--nnodes 2, one worker each) meeting on a loopback c10d rendezvous."""
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
             "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--local-addr=127.0.0.1",
             f"--max-restarts={restarts}", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    agents = [subprocess.Popen(agent, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True) for _ in range(2)]
    try:
        outputs = [a.communicate(timeout=timeout)[0] for a in agents]
    finally:
        for a in agents:  # each agent leads its own session: end it with its workers
            if a.poll() is None:
                os.killpg(a.pid, signal.SIGKILL)
                a.wait()
    for a, out in zip(agents, outputs):
        assert a.returncode == 0, f"a torchrun agent failed ({a.returncode}):\n{out[-4000:]}"
    return outputs


@pytest.mark.slow  # ~45 s: two agents, four worker starts
def test_two_nodes_meet_again_after_a_rank_is_killed(runs):
    """The killed rank's agent restarts for its failure, the other one for the membership change.

    Each agent then has its own TORCHELASTIC_RESTART_COUNT (1 and 0); the restarted group must still
    meet in the first round after the kill and end with the uninterrupted run's weights.
    """
    marker = runs / "killed_2nodes.txt"
    two_node_torchrun(str(REPO / "tests" / "helpers" / "kill_rank_once.py"), str(marker), "96", "--others-hang",
                      "stage1", "-e", "smoke", "--shards", str(runs / "shards"), "--out", str(runs / "s1_2nodes"),
                      *STAGE1, "compute.dist_timeout_s=15", restarts=1)
    assert marker.read_text().startswith("rank 1 killed at samples_seen=96")
    starts = marker.with_name(marker.name + ".starts").read_text().splitlines()  # "rank R restart C"
    assert sorted(line.split()[-1] for line in starts) == ["0", "0", "0", "1"], starts  # met at the first retry
    diff = max_weight_difference(runs / "s1_2rank", runs / "s1_2nodes")
    assert diff["model"] < TOLERANCE and diff["ema"] < TOLERANCE, diff


def test_a_restarted_group_agrees_on_a_fresh_store_generation_despite_a_dead_groups_keys():
    import datetime
    import threading

    store, timeout = torch.distributed.HashStore(), datetime.timedelta(seconds=20)
    assert distributed._generation(store, 0, 1, timeout) == 1  # the dead group: its keys stay behind
    store.set("ul/generation_1/hello/1", b"dead rank 1")
    store.set("ul/generation_1/welcome/1", b"dead rank 1")
    agreed: list[int] = []
    late_rank0 = threading.Timer(0.5, lambda: agreed.append(distributed._generation(store, 0, 2, timeout)))
    late_rank0.start()  # rank 1 starts first and reads the dead group's generation
    agreed.append(distributed._generation(store, 1, 2, timeout))
    late_rank0.join()
    assert agreed == [2, 2]


def test_share_splits_the_global_batch_and_refuses_an_uneven_one():
    assert [distributed.share(32, distributed.World(r, 4)) for r in range(4)] == [(0, 8), (8, 8), (16, 8), (24, 8)]
    with pytest.raises(ValueError, match="train.batch_size 30 .* world size 4"):
        distributed.share(30, distributed.World(1, 4))


def test_draws_under_batch_share_are_rows_of_the_global_draw():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    whole = torch.randn((8, 3), generator=g())
    with distributed.batch_share(4, 4, 8):
        half = distributed.randn((4, 3), generator=g())
        positions, size = distributed.example_positions(4)
        with pytest.raises(ValueError, match="batch-shaped draw of 5 rows"):
            distributed.rand((5,), generator=g())
    assert torch.equal(half, whole[4:]) and positions.tolist() == [4, 5, 6, 7] and size == 8
    assert torch.equal(distributed.randn((8, 3), generator=g()), whole)  # outside: plain torch.randn


@pytest.mark.slow  # ~20 s: two more launches
def test_a_one_rank_run_resumed_on_two_ranks_ends_as_the_one_rank_run(runs):
    half = [*STAGE1[1:], "stage1.train.total_samples=64"]  # stop at the first checkpoint
    cli("stage1", "-e", "smoke", "--shards", str(runs / "shards"), "--out", str(runs / "s1_resized"), *half)
    torchrun(2, "stage1", "-e", "smoke", "--shards", str(runs / "shards"), "--out", str(runs / "s1_resized"), *STAGE1)
    diff = max_weight_difference(runs / "s1_1rank", runs / "s1_resized")
    assert diff["model"] < TOLERANCE and diff["ema"] < TOLERANCE, diff


def test_only_the_distributed_module_reads_the_torchrun_environment():
    library = REPO / "ul_pipeline"
    readers = [p.relative_to(REPO).as_posix() for p in library.rglob("*.py")
               if any(f'"{name}"' in p.read_text() for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))]
    assert readers == ["ul_pipeline/distributed.py"]


@pytest.mark.gpu
def test_stage1_steps_on_cuda_with_tf32_and_compile(tmp_path, fmnist_400_source):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from ul_pipeline.config import load_config
    from ul_pipeline.stage1.training import train_stage1

    images = torch.from_numpy(np.stack([s.image for s in fmnist_400_source])[:128])
    cfg = load_config("smoke", ["stage1.train.total_samples=64", "compute.device=cuda", "compute.compile=true",
                                "compute.precision=bf16"])
    result = train_stage1(cfg, images, tmp_path)
    assert torch.backends.cuda.matmul.allow_tf32 and result.state.samples_seen == 64
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


STREAMED = ["data.in_memory=false", "compute.workers=2"]


@pytest.mark.slow  # ~20 s: one launch of 2 ranks x 2 DataLoader workers
def test_two_ranks_with_two_streaming_workers_each_see_every_sample_of_an_epoch_once(tmp_path):
    import json

    from ul_pipeline.data.loader import load_split_tensor
    from tests.synthetic import image_index, write_indexed_shards, write_indexed_store

    write_indexed_shards(str(tmp_path / "shards"))
    write_indexed_store(str(tmp_path / "latents.zarr"))
    torchrun(2, str(REPO / "tests" / "helpers" / "stream_epoch.py"), str(tmp_path), str(tmp_path / "shards"),
             str(tmp_path / "latents.zarr"), module=False)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    train = {"stage1": sorted(image_index(load_split_tensor(str(tmp_path / "shards"), "train")[0])),
             "stage2": list(range(320))}
    for stage in ("stage1", "stage2"):
        assert all(len(b) == 16 for r in ranks for b in r[stage])  # each rank: half of the global batch of 32
        for epoch in (0, 1):
            rows = [i for r in ranks for b in r[stage][10 * epoch:10 * (epoch + 1)] for i in b]
            assert sorted(rows) == train[stage], (stage, epoch)  # every sample once, none twice


@pytest.mark.slow  # ~40 s: an uninterrupted streaming run on 2 ranks, and one whose rank 1 dies and restarts
def test_a_streaming_rank_killed_mid_run_restarts_and_ends_with_the_uninterrupted_weights(runs):
    shards, marker = str(runs / "shards"), runs / "killed_streaming.txt"
    torchrun(2, "stage1", "-e", "smoke", "--shards", shards, "--out", str(runs / "s1_stream"), *STAGE1, *STREAMED)
    torchrun(2, str(REPO / "tests" / "helpers" / "kill_rank_once.py"), str(marker), "96",
             "stage1", "-e", "smoke", "--shards", shards, "--out", str(runs / "s1_stream_killed"), *STAGE1, *STREAMED,
             module=False, restarts=1)
    assert marker.read_text().startswith("rank 1 killed at samples_seen=96")
    loader = torch.load(runs / "s1_stream" / "last.pt", weights_only=True)["loader"]
    assert (loader["source"], loader["ranks"], loader["workers"]) == ("stream", 2, 2)
    diff = max_weight_difference(runs / "s1_stream", runs / "s1_stream_killed")
    assert diff["model"] == 0 and diff["ema"] == 0, diff  # the same ranks, the same batches: bit for bit
