"""The text-to-image chain as Dagster assets (`smoke_t2i`), the evaluation's run-config prompts, and `sample --prompt`."""

import json

import dagster as dg
import numpy as np
import pytest
import torch
import zarr

from assets.definitions import defs
from tests.dagster.test_assets import ASSETS, BLOCKING, CHECKS, metadata, resources
from ul_pipeline.cli import main
from ul_pipeline.text.encoder import text_encoder_sha256

PROMPT = "a red apple"


@pytest.fixture(scope="module")
def smoke_t2i(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagster_smoke_t2i")
    result = dg.materialize([*ASSETS, *CHECKS], partition_key="smoke_t2i", resources=resources(root),
                            run_config={"ops": {"evaluation": {"config": {"prompts": [PROMPT]}}}})
    return root, result


def test_smoke_t2i_chain_trains_a_text_model_and_shows_its_prompts(smoke_t2i):
    root, result = smoke_t2i
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(evaluations[name].passed for name in BLOCKING)
    (store_path,) = (root / "smoke_t2i").glob("latents-*.zarr")
    text = zarr.open_group(str(store_path), mode="r")[f"text_features/{text_encoder_sha256()[:16]}"]
    assert text.attrs["ul_text"]["complete"] and text["pooled"].shape[1] == 384
    ckpt = torch.load(root / "runs" / "smoke_t2i" / "stage2" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["stage2"]["text_conditioning"] == "cross"
    assert ckpt["text_encoder_sha256"] == text_encoder_sha256()
    assert any(k.startswith("net.cross1.") for k in ckpt["ema"])  # cross-attention in the blocks
    ev = metadata(result, "evaluation")
    metrics = json.loads((root / "runs" / "smoke_t2i" / "evaluation" / "metrics.json").read_text())
    assert PROMPT in metrics["prompts"] and PROMPT in ev["prompts"]  # the run config's prompt, beside held-out ones
    # the agreement metric comes with its range: real held-out images, shuffled prompts, the null prompt
    for key in ("agreement_top1", "agreement_ceiling_top1", "agreement_floor_shuffled_top1",
                "agreement_floor_null_top1", "agreement_chance"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # (that the metric separates real pairs from shuffled ones is tests/evaluation/test_agreement.py's: the smoke
    # set's 3 held-out captions leave chance at 1/3)
    assert list((root / "runs" / "smoke_t2i" / "evaluation" / "agreement").glob("agreement-*.pt"))  # cached
    assert len(metrics["prompts"]) > 1 and "data:image/png;base64," in ev["prompts_grid_image"]
    assert (root / "runs" / "smoke_t2i" / "evaluation" / "prompts_grid.png").is_file()
    assert metrics["num_generated"] == metrics["num_samples"] > 0  # the held-out captions' samples


def test_sample_with_prompts_writes_a_prompt_grid(smoke_t2i, tmp_path, capsys):
    root, _ = smoke_t2i
    runs = root / "runs" / "smoke_t2i"
    out = tmp_path / "prompts.png"
    args = ["sample", "--stage1", str(runs / "stage1" / "last.pt"), "--base", str(runs / "stage2" / "last.pt"),
            "--prompt", PROMPT, "--prompt", "thumbs up sign", "--num", "2", "--steps", "2", "--decoder-steps", "2",
            "--out", str(out)]
    assert main(args) == 0
    assert out.is_file() and "2 prompts x 2 samples" in capsys.readouterr().out
    assert main(args[:5] + ["--out", str(out)]) == 1  # a text model without --prompt: a clear error
    assert "is text-conditioned: give --prompt" in capsys.readouterr().err


def test_t2i_jobs_are_defined_on_their_partitions():
    for name in ("smoke_t2i", "demo_t2i"):
        job = defs.resolve_job_def(name)
        assert job.run_tags["dagster/partition"] == name
        assert name in job.partitions_def.get_partition_keys()


def test_sample_refuses_an_empty_prompt_and_a_class_label(smoke_t2i, tmp_path, capsys):
    runs = smoke_t2i[0] / "runs" / "smoke_t2i"
    args = ["sample", "--stage1", str(runs / "stage1" / "last.pt"), "--base", str(runs / "stage2" / "last.pt"),
            "--num", "1", "--steps", "1", "--decoder-steps", "1", "--out", str(tmp_path / "p.png")]
    assert main([*args, "--prompt", PROMPT, "--prompt", "  "]) == 1  # the model never saw an empty caption
    assert "prompt 2 of 2 is empty" in capsys.readouterr().err
    assert main([*args, "--prompt", PROMPT, "--label", "3"]) == 1  # was silently ignored
    assert "reads no class label" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def _one_caption_shards(path):
    """16x16 RGB images all captioned alike, as shards: other shards than smoke_t2i's, one distinct caption."""
    from PIL import Image

    from ul_pipeline.data.shards import write_shards
    from ul_pipeline.data.sources import ImageFolderSource

    folder = path.parent / "one_caption"
    for i in range(6):
        (folder / "c").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * i, 0, 200)).save(folder / "c" / f"{i}.png")
        (folder / "c" / f"{i}.txt").write_text("a square")
    write_shards(ImageFolderSource(str(folder), resolution=16, channels=3), str(path), shard_size=4, val_size=2,
                 seed=0, resolution=16, channels=3, num_classes=10)
    return str(path)


def test_train_captions_pair_with_their_own_images_whatever_the_store(smoke_t2i, tmp_path):
    import shutil

    from tests.dagster.test_assets import shards_dir
    from ul_pipeline.data import load_split_tensor
    from ul_pipeline.evaluation.prompts import encode_prompts, train_pooled
    from ul_pipeline.latents.text_features import open_text_features, read_captions

    root = smoke_t2i[0]
    meta = torch.load(root / "runs" / "smoke_t2i" / "stage2" / "last.pt", map_location="cpu", weights_only=False)
    meta = {k: v for k, v in meta.items() if k not in ("model", "ema", "optimizer")}
    shards = str(shards_dir(root, "smoke_t2i"))
    keys = list(load_split_tensor(shards, "train")[2])
    captions = read_captions(shards, "train", keys)
    logs = []
    stored = np.asarray(open_text_features(meta["latent_store_url"], meta["text_encoder_sha256"])["pooled"][:])
    assert np.array_equal(train_pooled(meta, shards, keys, captions, "cpu", log=logs.append).numpy(), stored) and not logs
    moved = {**meta, "latent_store_url": str(tmp_path / "gone.zarr")}  # store deleted or moved since Stage 2
    assert torch.allclose(train_pooled(moved, shards, keys, captions, "cpu", log=logs.append), torch.from_numpy(stored),
                          atol=1e-5)
    assert "encoded now" in logs[-1] and "not found" in logs[-1]
    other = _one_caption_shards(tmp_path / "other")  # other shards: their own captions, never the store's rows
    other_keys = list(load_split_tensor(other, "train")[2])
    other_captions = read_captions(other, "train", other_keys)
    got = train_pooled(meta, other, other_keys, other_captions, "cpu", log=logs.append)
    assert torch.allclose(got, encode_prompts(other_captions, meta, "cpu", cross=False).pooled, atol=1e-6)
    assert "other shards" in logs[-1]
    shutil.rmtree(tmp_path / "other")


def test_evaluation_with_one_distinct_held_out_caption_skips_only_the_agreement(smoke_t2i, tmp_path):
    from ul_pipeline.evaluation.image import evaluate

    runs = smoke_t2i[0] / "runs" / "smoke_t2i"
    logs = []
    result = evaluate(str(runs / "stage1" / "last.pt"), _one_caption_shards(tmp_path / "shards"), tmp_path / "ev",
                      base_checkpoint=str(runs / "stage2" / "last.pt"), log=logs.append)
    assert "psnr" in result and result["num_generated"] > 0 and "prompts_grid" in result
    assert not any(k.startswith("agreement_") for k in result)
    assert any("agreement skipped" in line for line in logs)
