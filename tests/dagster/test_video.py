"""The video chain as Dagster assets: `smoke_video` is an experiment partition like any other."""

import json
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import defs
from tests.dagster.test_assets import ASSETS, BLOCKING, CHECKS, metadata, resources


@pytest.fixture(scope="module")
def smoke_video(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagster_smoke_video")
    result = dg.materialize([*ASSETS, *CHECKS], partition_key="smoke_video", resources=resources(root))
    return root, result


def test_smoke_video_chain_materializes_with_checks_gifs_and_video_shapes(smoke_video):
    root, result = smoke_video
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(evaluations[name].passed for name in BLOCKING)
    store = metadata(result, "latent_store")
    assert store["num_samples"] == 128 and store["complete"] is True
    import zarr

    (store_path,) = (root / "smoke_video").glob("latents-*.zarr")  # keyed by the encoder hash
    z = zarr.open_group(str(store_path), mode="r")["z_clean"]
    assert z.shape == (128, 4, 2, 4, 4)  # (N, C, t, h, w): 8 frames -> 2 latent frames
    ev = metadata(result, "evaluation")
    metrics = json.loads((root / "runs" / "smoke_video" / "evaluation" / "metrics.json").read_text())
    assert ev["bits_per_pixel"] == pytest.approx(metrics["bits_per_pixel"]) and ev["bits_per_pixel"] > 0
    assert len(metrics["psnr_per_frame"]) == 8 and metrics["context_frames"] == 4
    for gif in ("reconstruction_gif", "sample_gif"):
        assert "data:image/gif;base64," in ev[gif] and Path(metrics[gif]).read_bytes()[:6] == b"GIF89a"
    assert "data:image/png;base64," in ev["sample_grid_image"]


def test_video_jobs_are_defined_on_their_partitions():
    for name in ("smoke_video", "demo_video"):
        job = defs.resolve_job_def(name)
        assert job.run_tags["dagster/partition"] == name
        assert name in job.partitions_def.get_partition_keys()
