"""The text-to-image chain as Dagster assets (`smoke_t2i`), the evaluation's run-config prompts, and `sample --prompt`."""

import json

import dagster as dg
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
