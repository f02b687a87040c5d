"""Checkpoints you can trust: concurrent writers, one read per load, no code run on load, durable writes."""

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.data import storage
from ul_pipeline.latents.standardize import Standardization
from ul_pipeline.stage1.training import load_stage1, train_stage1
from ul_pipeline.stage2.training import load_base_model, train_stage2
from ul_pipeline.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
STEPS, SIZE = 40, 1 << 20  # saves per writer, floats per checkpoint (4 MB)
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from ul_pipeline.train import checkpoint
    checkpoint.code_version = lambda: "test"  # no git calls: the writes follow each other closely
    path, meet = Path(sys.argv[1]), Path(sys.argv[2])
    writer, steps, size = map(int, sys.argv[3:])
    for step in range(steps):
        (meet / f"{writer}-{step}").touch()  # wait for the other writer: both save step `step` at once
        while not (meet / f"{3 - writer}-{step}").exists():
            time.sleep(0.001)
        value = float(1000 * writer + step)
        checkpoint.save_checkpoint(path, {"kind": "test", "model": {"w": torch.full((size,), value)}, "value": value})
""")


def test_two_writers_and_a_reader_of_one_checkpoint_never_collide(tmp_path):
    """Two processes save last.pt at the same moments while this one reads it: every read is one whole write."""
    path, meet = tmp_path / "run" / "last.pt", tmp_path / "meet"
    meet.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(meet), str(i), str(STEPS), str(SIZE)],
                                env=env, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    reads = 0
    try:
        while any(w.poll() is None for w in writers) and all(w.poll() in (None, 0) for w in writers):
            if path.exists():
                ckpt = load_checkpoint(path, kind="test")  # raises CheckpointError on a torn or missing file
                assert torch.equal(ckpt["model"]["w"], torch.full((SIZE,), ckpt["value"]))  # one write's bytes
                reads += 1
            else:
                time.sleep(0.01)
    finally:
        for w in writers:  # a crashed writer leaves the other waiting for it
            if w.poll() is None and any(other.poll() for other in writers):
                w.kill()
            w.wait()
    errors = [w.stderr.read() for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert reads > 0
    last = load_checkpoint(path, kind="test")["value"]
    assert last in (1000.0 + STEPS - 1, 2000.0 + STEPS - 1)  # the last write of one of the two
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left behind


class RunsCodeOnLoad:
    """Unpickling this calls open(marker, 'w'): a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code_ran"
    torch.save({"format": 1, "kind": "stage1", "payload": RunsCodeOnLoad(marker)}, path)
    with pytest.raises(CheckpointError, match=f"refusing checkpoint {path}"):
        load_checkpoint(path, kind="stage1")
    assert not marker.exists()


def test_payload_values_are_saved_as_plain_types_or_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"kind": "test", "np_float": np.float64(0.5), "np_int": np.int64(3),
                           "where": tmp_path / "shards", "nested": [{"x": np.float32(2.0)}]})
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["np_float"] == 0.5 and type(ckpt["np_float"]) is float and type(ckpt["np_int"]) is int
    assert ckpt["where"] == str(tmp_path / "shards") and ckpt["nested"] == [{"x": 2.0}]
    with pytest.raises(CheckpointError, match=r"\['extra'\] is a RunsCodeOnLoad"):
        save_checkpoint(tmp_path / "other.pt", {"kind": "test", "extra": RunsCodeOnLoad(tmp_path / "m")})
    assert not (tmp_path / "other.pt").exists()


@pytest.fixture(scope="module")
def smoke_checkpoints(tmp_path_factory):
    """A real one-step Stage-1 and Stage-2 checkpoint (the latter with a latent standardization)."""
    root = tmp_path_factory.mktemp("ckpts")
    cfg = load_config("smoke", ["stage1.train.total_samples=16", "stage2.train.total_samples=16"])
    images = torch.randint(0, 256, (32, 1, 32, 32), dtype=torch.uint8)
    s1 = train_stage1(cfg, images, root / "s1", extra={"dataset_manifest_sha256": "0" * 64}).checkpoint
    s2 = train_stage2(cfg, torch.randn(32, 4, 8, 8), torch.randint(0, 10, (32,)), root / "s2",
                      standardization=Standardization((0.1, -0.2, 0.0, 0.3), 1.5),
                      extra={"encoder_sha256": "0" * 64, "encode_seconds": None}).checkpoint
    return {"stage1": s1, "stage2": s2}


def test_real_checkpoints_load_with_weights_only(smoke_checkpoints):
    for kind, path in smoke_checkpoints.items():
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["kind"] == kind and ckpt["step"] == 1


@pytest.mark.parametrize("kind, load", [("stage1", load_stage1), ("stage2", load_base_model)])
def test_the_recorded_sha256_is_that_of_the_weights_loaded(smoke_checkpoints, tmp_path, monkeypatch, kind, load):
    """A writer replaces the file right after the weights were read: the hash must still be of those weights."""
    path = tmp_path / "last.pt"
    ckpt = torch.load(smoke_checkpoints[kind], weights_only=True)
    save_checkpoint(path, ckpt)
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    other = tmp_path / "other.pt"
    save_checkpoint(other, {**ckpt, "ema": {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["ema"].items()}})
    real_load = torch.load

    def load_then_swap(*args, **kwargs):
        out = real_load(*args, **kwargs)
        if other.exists():
            os.replace(other, path)  # another run's checkpoint lands between the weights and the hash
        return out

    monkeypatch.setattr(torch, "load", load_then_swap)
    model, _, meta = load(path)
    assert not other.exists()  # the swap happened
    loaded_first = all(torch.equal(v, ckpt["ema"][k]) for k, v in model.state_dict().items())
    assert loaded_first and meta["sha256"] == first


def test_atomic_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b)))
    for write in (lambda p: save_checkpoint(p, {"kind": "test", "model": {"w": torch.ones(3)}}),
                  lambda p: storage.write_bytes_atomic(storage.url_to_fs(str(p))[0], str(p), b"bytes")):
        events.clear()
        path = tmp_path / "sub" / "file.bin"
        write(path)
        (_, tmp, dest), = [e for e in events if e[0] == "replace"]
        assert dest == str(path) and Path(tmp).parent == path.parent
        order = [events.index(e) for e in (("fsync", tmp), ("replace", tmp, dest), ("fsync", str(path.parent)))]
        assert order == sorted(order)  # the file is durable before the rename, the rename before we go on
