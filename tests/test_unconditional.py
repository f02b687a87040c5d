"""The unconditional mode (data.num_classes 0) on a flat folder without captions: shards -> Stage 1 -> latents ->
Stage 2 -> samples as files -> evaluation through the CLI, guidance refused, the sibling run folder named, and
the model variant itself (no label read, no draw for dropping)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ul_pipeline.cli import main
from ul_pipeline.config import ConfigError, load_config
from ul_pipeline.data import read_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["data.source=image_folder", "data.num_classes=0", "data.val_size=8", "data.shard_size=16",
        "stage1.train.total_samples=32", "stage1.train.batch_size=16", "stage2.train.total_samples=32",
        "stage2.train.batch_size=16", "encode.block_size=16", "encode.batch_size=16", "sample.steps=2",
        "sample.decoder_steps=2", "eval.num_samples=8", "compute.device=cpu", "compute.tensorboard=false"]


def flat_folder(root, fmnist_400, n: int = 40):
    """n Fashion-MNIST pictures as PNGs in one folder: no class sub-folders, no captions."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(fmnist_400[0][i]).save(root / f"img{i:03d}.png")
    return root


def test_unconditional_chain_through_the_cli(tmp_path, fmnist_400, capsys):
    flat = flat_folder(tmp_path / "flat", fmnist_400)
    cfg = ["-e", "smoke", f"data.uri={flat}", *TINY]
    shards, s1, store, s2 = str(tmp_path / "shards"), tmp_path / "s1", str(tmp_path / "z.zarr"), tmp_path / "s2"
    assert main(["shard", *cfg, "--out", shards]) == 0
    assert "unconditional" in capsys.readouterr().out
    m = read_manifest(shards)
    assert m.num_classes == 0 and m.class_names is None and m.num_samples("train") == 32
    assert main(["stage1", *cfg, "--shards", shards, "--out", str(s1)]) == 0
    assert main(["encode", "--checkpoint", str(s1 / "last.pt"), "--shards", shards, "--out", store]) == 0
    assert main(["stage2", *cfg, "--latents", store, "--out", str(s2)]) == 0
    ckpt = torch.load(s2 / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["ema"]["net.label_embed.weight"].shape[0] == 1  # one label: the null label
    capsys.readouterr()
    # a changed key sends the run to a sibling folder, and the CLI says which key and where
    assert main(["stage2", *cfg, "stage2.bias=0.5", "--latents", store, "--out", str(s2)]) == 0
    err = capsys.readouterr().err
    assert f"uses the sibling folder {s2}-" in err and "stage2.bias: checkpoint has 0.0, config has 0.5" in err
    # samples as files
    out = tmp_path / "samples"
    pair = ["--stage1", str(s1 / "last.pt"), "--base", str(s2 / "last.pt")]
    assert main(["sample", *pair, "--num", "3", "--steps", "2", "--decoder-steps", "2", "--seed", "5",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "sample_0000.png", "sample_0001.png",
                                                      "sample_0002.png", "samples.npz"]
    npz = np.load(out / "samples.npz")
    assert npz["images"].shape == (3, 32, 32, 1) and npz["images"].dtype == np.uint8
    assert npz["labels"].tolist() == [-1, -1, -1] and npz["seeds"].tolist() == [5, 5, 5]
    assert (np.asarray(Image.open(out / "sample_0001.png")) == npz["images"][1, ..., 0]).all()
    assert main(["sample", *pair, "--guidance", "1", "--num", "2", "--out", str(tmp_path / "g.png")]) == 1
    assert "no condition to guide by" in capsys.readouterr().err
    assert main(["sample", *pair, "--label", "0", "--out", str(tmp_path / "l.png")]) == 1
    assert "is unconditional" in capsys.readouterr().err
    assert main(["evaluate", *cfg, *pair, "--shards", shards, "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_generated"] == 8 and (tmp_path / "eval" / "samples.png").stat().st_size > 100


def test_config_refuses_guidance_without_a_condition():
    with pytest.raises(ConfigError, match="sample.guidance"):
        load_config("smoke", ["data.num_classes=0", "sample.guidance=1.5"])
    with pytest.raises(ConfigError, match="data.num_classes"):
        load_config("smoke", ["data.num_classes=-1"])


def test_unconditional_model_reads_no_label_and_draws_no_dropout():
    from ul_pipeline.stage2.build import build_stage2_model
    from ul_pipeline.stage2.model import BaseModel
    from ul_pipeline.stage2.unconditional import UnconditionalBaseModel

    cfg = load_config("smoke", ["data.num_classes=0"])
    torch.manual_seed(0)
    model = build_stage2_model(cfg, (4, 8, 8))
    assert isinstance(model, UnconditionalBaseModel) and model.num_classes == 0
    z = torch.randn(4, 4, 8, 8)
    a = model.loss_terms(z, torch.tensor([0, 3, 7, 1]), generator=torch.Generator().manual_seed(1)).weighted_nats
    b = model.loss_terms(z, torch.zeros(4, dtype=torch.long), generator=torch.Generator().manual_seed(1)).weighted_nats
    assert torch.equal(a, b)  # the labels' values are not read
    g = torch.Generator().manual_seed(2)
    model.drop_labels(torch.zeros(4, dtype=torch.long), g)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(2).get_state())  # no uniform drawn
    with pytest.raises(ValueError, match="no condition to guide by"):
        model.sample_z0(torch.zeros(2, dtype=torch.long), 2, guidance=1.0)
    assert type(build_stage2_model(load_config("smoke"), (4, 8, 8))) is BaseModel  # the default stays as it was


def test_a_sweep_point_can_be_unconditional(tmp_path):
    """A sweep over a user's flat folder: an unconditional point beside a labelled one, each its own model."""
    from ul_pipeline.config.sweeps import load_sweep
    from ul_pipeline.stage2.build import build_stage2_model
    from ul_pipeline.stage2.unconditional import UnconditionalBaseModel

    (tmp_path / "experiments").mkdir()
    (tmp_path / "base.yaml").write_text((load_config.__globals__["CONFIG_DIR"] / "base.yaml").read_text())
    (tmp_path / "experiments" / "mine.yaml").write_text(
        "data: {source: image_folder, uri: /data/flat}\n"
        "sweep:\n  variants:\n    uncond: {data.num_classes: 0}\n    labelled: {data.num_classes: 3}\n")
    points = {p.label: p for p in load_sweep("mine", tmp_path).points}
    cfgs = {label: load_config(p.key, config_dir=tmp_path) for label, p in points.items()}
    assert cfgs["uncond"].data.num_classes == 0 and cfgs["labelled"].data.num_classes == 3
    assert isinstance(build_stage2_model(cfgs["uncond"], (4, 8, 8)), UnconditionalBaseModel)
    assert not isinstance(build_stage2_model(cfgs["labelled"], (4, 8, 8)), UnconditionalBaseModel)
