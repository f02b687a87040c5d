"""Data-layer throughput on real Fashion-MNIST: shard writing, shard loading, latent extraction,
Stage-2 batches from the latent store, and (for comparison) encoding images on the fly.

    python benchmarks/bench_data.py [--num-samples 4000] [--batch-size 128] [--no-s3]

Uses the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) and the `small`
Stage-1 encoder (random weights: the speed does not depend on them). With `rclone` installed, shard
writing and loading are also measured against a local `rclone serve s3` endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ul_pipeline.config import DataConfig, EncodeConfig  # noqa: E402
from ul_pipeline.distributed import World  # noqa: E402
from ul_pipeline.latents.dataset import BlockReader, read_rows, sample_arrays  # noqa: E402
from ul_pipeline.data import ShardReader, fashion_mnist_source, iter_split, load_split_tensor, write_shards  # noqa: E402
from ul_pipeline.train.batches import ShuffledBatches  # noqa: E402
from ul_pipeline.train.streamed import StreamedBatches  # noqa: E402
from ul_pipeline.latents.extract import extract_latents  # noqa: E402
from ul_pipeline.latents.store import open_store  # noqa: E402
from ul_pipeline.nets.presets import build_stage1_nets  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def take(iterator, n):
    for _, item in zip(range(n), iterator):
        pass
    return item


@contextlib.contextmanager
def rclone_s3(root: Path):
    """A throwaway S3 endpoint (`rclone serve s3`) over `root`; yields storage_options or None."""
    rclone = shutil.which("rclone", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if rclone is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (root / "bench").mkdir(parents=True)
    proc = subprocess.Popen([rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", "bench,benchsecret",
                             "--config", "", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.05)
        yield {"key": "bench", "secret": "benchsecret", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
               "config_kwargs": {"s3": {"addressing_style": "path"}}}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_shards(source, url, data: DataConfig, num_samples: int, batch_size: int, storage_options=None) -> dict:
    sharding = dict(shard_size=data.shard_size, val_size=data.val_size, seed=data.seed, resolution=data.resolution,
                    channels=data.channels, num_classes=data.num_classes, limit=num_samples)
    manifest, t_write = timed(lambda: write_shards(source, url, storage_options=storage_options, **sharding))
    n_train = manifest.num_samples("train")
    nbytes = int(manifest.table["bytes"].sum())
    _, t_pass = timed(lambda: sum(1 for _ in iter_split(url, "train", storage_options=storage_options)))
    stream = StreamedBatches(ShardReader(url, storage_options=storage_options), batch_size=batch_size, seed=0,
                             shuffle_buffer=data.shuffle_buffer, world=World())
    it = stream(0)
    take(it, 1)  # the first window
    n_batches = max(1, 2 * n_train // batch_size)
    _, t_stream = timed(lambda: take(it, n_batches))
    return {"write": num_samples / t_write, "write_MB": nbytes / t_write / 1e6, "one_pass": n_train / t_pass,
            "stream": n_batches * batch_size / t_stream, "bytes_per_sample": nbytes / num_samples, "manifest": manifest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=4000, help="Fashion-MNIST images to use (train split first)")
    parser.add_argument("--batch-size", type=int, default=128, help="loader / Stage-2 / encoder batch size")
    parser.add_argument("--no-s3", action="store_true", help="skip the rclone S3 measurements")
    args = parser.parse_args()
    data = DataConfig(shard_size=1000, val_size=min(500, args.num_samples // 5), shuffle_buffer=1000)
    encode = EncodeConfig()
    bs = args.batch_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{args.num_samples} Fashion-MNIST images at {data.channels}x{data.resolution}x{data.resolution}, "
          f"shards of {data.shard_size}, batch {bs}")

    source, t_src = timed(lambda: fashion_mnist_source(resolution=data.resolution, channels=data.channels))
    print(f"read Debian IDX files ({len(source)} images)         {t_src:8.2f} s")

    encoder, _, _ = build_stage1_nets("small", (data.channels, data.resolution, data.resolution))
    encoder.eval()

    def encode_fn(x: torch.Tensor) -> torch.Tensor:  # uint8 (B, C, H, W) -> z_clean (B, 4, 8, 8)
        return encoder(x.float() / 127.5 - 1.0)

    with tempfile.TemporaryDirectory() as tmp:
        local = bench_shards(source, f"{tmp}/shards", data, args.num_samples, bs)
        n_train = local["manifest"].num_samples("train")
        print(f"shard write (local)                  {local['write']:10.0f} samples/s "
              f"({local['write_MB']:.1f} MB/s, {local['bytes_per_sample']:.0f} B/sample)")
        print(f"loader, one ordered pass (local)     {local['one_pass']:10.0f} samples/s")
        print(f"loader, training stream (local)      {local['stream']:10.0f} samples/s")

        store, t_extract = timed(lambda: extract_latents(
            f"{tmp}/shards", "train", f"{tmp}/latents.zarr", encode_fn,
            {"encoder_sha256": "bench", "stage1_config": {"preset": "small"}, "logsnr_0": 5.0},
            block_size=encode.block_size, batch_size=encode.batch_size))
        print(f"latent extraction, small encoder     {n_train / t_extract:10.0f} samples/s "
              f"({n_train} samples, block {encode.block_size}, batch {encode.batch_size})")

        store = open_store(f"{tmp}/latents.zarr", "bench")
        rates = {}
        for in_memory in (False, True):
            if in_memory:
                fields = sample_arrays(store)
                it = ShuffledBatches(*(torch.from_numpy(read_rows(store, f)) for f in fields), batch_size=bs)(0)
            else:
                it = StreamedBatches(BlockReader(store), batch_size=bs, seed=0, shuffle_buffer=data.shuffle_buffer,
                                     world=World())(0)
            next(it)
            n_batches = max(50, 10 * n_train // bs)
            _, t = timed(lambda: take(it, n_batches))
            rates[in_memory] = n_batches * bs / t
        print(f"Stage-2 batches from store (chunks)  {rates[False]:10.0f} samples/s")
        print(f"Stage-2 batches from store (in RAM)  {rates[True]:10.0f} samples/s")

        images, _, _ = load_split_tensor(f"{tmp}/shards", "train")
        n_enc = min(len(images), 8 * bs)
        with torch.no_grad():
            encode_fn(images[:bs])  # warm-up
            _, t_enc = timed(lambda: [encode_fn(images[i:i + bs]) for i in range(0, n_enc, bs)])
        encode_rate = n_enc / t_enc
        print(f"encode on the fly, small encoder     {encode_rate:10.0f} samples/s (images already in RAM)")
        print(f"store vs on-the-fly encoding         {rates[False] / encode_rate:10.1f}x (chunks), "
              f"{rates[True] / encode_rate:.1f}x (in RAM)")

        if not args.no_s3:
            with rclone_s3(Path(tmp) / "s3") as options:
                if options is None:
                    print("S3: rclone not found, skipped")
                else:
                    remote = bench_shards(source, "s3://bench/shards", data, args.num_samples, bs, options)
                    print(f"shard write (S3, rclone loopback)    {remote['write']:10.0f} samples/s "
                          f"({remote['write_MB']:.1f} MB/s)")
                    print(f"loader, one ordered pass (S3)        {remote['one_pass']:10.0f} samples/s")
                    print(f"loader, training stream (S3)         {remote['stream']:10.0f} samples/s")
                    assert remote["manifest"].sha256 == local["manifest"].sha256, "S3 and local shards differ"


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total                                {time.perf_counter() - t0:10.1f} s")
