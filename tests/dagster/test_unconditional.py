"""The unconditional chain as Dagster assets: a flat folder without captions (data.num_classes 0) -> shards ->
Stage 1 -> latents -> Stage 2 -> evaluation, with its checks, and samples of the result written as files."""

import json

import dagster as dg
import numpy as np
import pytest
import torch

from tests.dagster.test_assets import ASSETS, BLOCKING, CHECKS, metadata, resources
from tests.test_unconditional import TINY, flat_folder
from ul_pipeline.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unconditional_chain_materializes_and_samples_to_files(tmp_path, fmnist_400):
    flat = flat_folder(tmp_path / "flat", fmnist_400)
    root = tmp_path / "root"
    overrides = [f"data.uri={flat}", *[o for o in TINY if not o.startswith("compute.")], "compute.tensorboard=false"]
    result = dg.materialize([*ASSETS, *CHECKS], partition_key="smoke", resources=resources(root, overrides))
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(evaluations[name].passed for name in BLOCKING)
    runs = root / "runs" / "smoke"
    ckpt = torch.load(runs / "stage2" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["data"]["num_classes"] == 0 and ckpt["ema"]["net.label_embed.weight"].shape[0] == 1
    metrics = json.loads((runs / "evaluation" / "metrics.json").read_text())
    assert metrics["num_generated"] == 8 and metadata(result, "evaluation")
    out = tmp_path / "samples"
    assert main(["sample", "--stage1", str(runs / "stage1" / "last.pt"), "--base", str(runs / "stage2" / "last.pt"),
                 "--num", "4", "--steps", "2", "--decoder-steps", "2", "--out", str(out)]) == 0
    assert len(list(out.glob("sample_*.png"))) == 4 and np.load(out / "samples.npz")["images"].shape == (4, 32, 32, 1)
