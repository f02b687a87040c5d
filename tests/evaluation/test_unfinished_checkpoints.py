"""An unfinished checkpoint (`complete` False) is encoded and evaluated with a warning, never silently."""

import torch

from ul_pipeline.config import load_config
from ul_pipeline.evaluation.image import evaluate
from ul_pipeline.latents.store import open_store
from ul_pipeline.lifecycle import encode_latents
from ul_pipeline.train.checkpoint import read_checkpoint, save_checkpoint
from tests.evaluation.conftest import EVAL


def unfinished_copy(path, dest, **changes):
    """The checkpoint at `path` as if its run had stopped half-way, saved at `dest`; (dest, its sha256)."""
    ckpt = torch.load(path, weights_only=True)
    save_checkpoint(dest, {**ckpt, "complete": False, "samples_seen": ckpt["samples_seen"] // 2, **changes})
    return dest, read_checkpoint(dest)[1]


def test_evaluating_unfinished_checkpoints_warns_and_records_it(trained, tmp_path):
    _, shards, s1, s2 = trained
    cfg = load_config("smoke", [*EVAL, "eval.fid=false"])
    s1_half, s1_sha = unfinished_copy(s1, tmp_path / "s1" / "last.pt")
    s2_half, _ = unfinished_copy(s2, tmp_path / "s2" / "last.pt", encoder_sha256=s1_sha)
    logs, warnings = [], []
    result = evaluate(s1_half, shards, tmp_path / "e", base_checkpoint=s2_half, cfg=cfg, log=logs.append)
    assert sum(line.startswith(f"WARNING: checkpoint {s1_half} is unfinished (samples_seen 16 of 32)")
               for line in logs) == 1
    assert sum(line.startswith(f"WARNING: checkpoint {s2_half} is unfinished") for line in logs) == 1
    assert result["stage1_complete"] is False and result["base_complete"] is False

    result = evaluate(s1, shards, tmp_path / "e2", base_checkpoint=s2, cfg=cfg, log=logs.append, warn=warnings.append)
    assert result["stage1_complete"] is True and result["base_complete"] is True and warnings == []


def test_encoding_an_unfinished_stage1_checkpoint_warns_and_the_store_records_it(trained, tmp_path):
    _, shards, s1, _ = trained
    s1_half, _ = unfinished_copy(s1, tmp_path / "s1" / "last.pt")
    warnings = []
    store = encode_latents(s1_half, shards, str(tmp_path / "latents.zarr"), warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith(f"checkpoint {s1_half} is unfinished")
    assert store.meta["stage1_complete"] is False
    assert open_store(str(tmp_path / "latents.zarr")).meta["stage1_complete"] is False
