"""Frame prediction trains on the context sampling gives it: the latent store's z_clean_context is the
encoding of each clip padded after its context frames, exactly what video evaluation encodes, and a
store without it is refused by name."""

import pytest
import torch

from ul_pipeline import lifecycle
from ul_pipeline.config import load_config
from ul_pipeline.data import load_split_tensor
from ul_pipeline.diffusion import alpha_sigma
from ul_pipeline.evaluation.metrics import to_float
from ul_pipeline.evaluation.video import context_z0
from ul_pipeline.latents.encode import context_clip
from ul_pipeline.latents.store import LatentStoreError, open_store
from ul_pipeline.stage1.training import load_stage1
from ul_pipeline.stage2.batches import stage2_batches
from tests.conftest import VIDEO_FAST
from tests.stage2.test_frame_conditioned import LATENT, RecordingNet
from ul_pipeline.stage2.frame_conditioned import FrameConditionedBaseModel

def test_training_context_equals_the_context_sampling_encodes(video_encoded, monkeypatch):
    cfg, shards, s1, store_url = video_encoded
    store = open_store(store_url)
    assert store.meta["context_frames"] == 4 and store.z_clean_context.shape == store.z_clean.shape
    seen = {}
    monkeypatch.setattr(lifecycle, "train_stage2_from", lambda cfg, batches, *a, **kw: seen.update(batches=batches))
    lifecycle.run_stage2(cfg, store_url, "unused-run-dir")  # what Stage 2 is handed: its in-memory batches
    k = 1  # 4 context frames of 8 -> latent frame 0 of 2
    handed = dict(zip(seen["batches"].fields, seen["batches"].tensors))
    trained_on = handed["z_clean_context"][:, :, :k]  # (N, C, 1, h, w), store order = the train split's
    streamed = stage2_batches(load_config("smoke_video", [*VIDEO_FAST, "data.in_memory=false"]), store)
    assert streamed.fields == seen["batches"].fields  # streaming carries the context too

    ul, _, _ = load_stage1(s1)
    clips, _, _ = load_split_tensor(shards, "train")
    alpha0, sigma0 = alpha_sigma(torch.tensor(cfg.stage1.logsnr_0))
    with torch.no_grad():
        # sampling's own path: z0 = alpha0 z_clean + sigma0 eps of the padded clip; the same eps taken out again
        z0 = context_z0(ul, clips, 4, k, torch.Generator().manual_seed(3))
        eps = torch.randn((len(clips), *store.latent_shape), generator=torch.Generator().manual_seed(3))[:, :, :k]
        sampled_from_z0 = (z0 - sigma0 * eps) / alpha0
        sampled = ul.posterior(to_float(context_clip(clips, 4))).z_clean[:, :, :k]  # the same encoding, no noise
        whole_clip = ul.posterior(to_float(clips)).z_clean[:, :, :k]  # what Stage 2 trained on before
    assert sampled.shape == trained_on.shape == (len(clips), store.latent_shape[0], k, *store.latent_shape[2:])
    assert torch.allclose(trained_on, sampled, rtol=0, atol=1e-6)  # same pixels, same encoder (bitwise here)
    assert torch.allclose(trained_on, sampled_from_z0, rtol=0, atol=1e-6)  # z0 arithmetic rounds a little
    # the test can fail: the whole clip's latent frame 0 carries the later frames and differs clearly
    assert (whole_clip - trained_on).abs().max() > 0.1 * trained_on.abs().mean()


def test_the_model_puts_the_given_context_not_the_whole_clip_latents_on_context_frames():
    net = RecordingNet()
    model = FrameConditionedBaseModel(net, LATENT, 10, context_latents=1, context_dropout=0.0, label_dropout=0.0)
    z, context = torch.randn(16, *LATENT), torch.randn(16, *LATENT)
    labels = torch.zeros(16, dtype=torch.long)
    for whole in (z, z + 50.0):  # the whole clip's own context frames do not matter, only the generated ones
        model.loss_terms(whole.clone(), labels, generator=torch.Generator().manual_seed(0), context_z_clean=context)
    other = context.clone()
    other[:, :, 1:] += 50.0  # frames past the context in z_clean_context are never read
    model.loss_terms(z, labels, generator=torch.Generator().manual_seed(0), context_z_clean=other)
    (x1, _, mask), (x2, _, _), (x3, _, _) = net.calls
    assert mask[:, 0].all() and not mask[:, 1:].any()
    assert torch.equal(x1[:, :, :1], x2[:, :, :1]) and torch.equal(x1[:, :, :1], x3[:, :, :1])
    alpha0, sigma0 = alpha_sigma(torch.tensor(model.schedule.logsnr_max))
    noise = (x1[:, :, :1] - alpha0 * context[:, :, :1]) / sigma0  # a z0 draw of the given context
    assert noise.abs().max() < 6 and 0.8 < noise.std() < 1.2


def test_a_store_without_the_context_encoding_is_refused_by_name(video_encoded, tmp_path):
    cfg, shards, s1, _ = video_encoded
    old_url = str(tmp_path / "old.zarr")  # as written before z_clean_context: no context encoding
    no_context = load_config("smoke_video", [*VIDEO_FAST, "stage2.context_frames=0"])
    lifecycle.encode_latents(s1, shards, old_url, cfg=no_context)
    assert open_store(old_url).z_clean_context is None and "context_frames" not in open_store(old_url).meta
    with pytest.raises(LatentStoreError, match=f"latent store {old_url} has no z_clean_context.*delete the store"):
        lifecycle.run_stage2(cfg, old_url, tmp_path / "stage2")
    with pytest.raises(LatentStoreError, match=f"latent store {old_url}: its context encoding is for context_frames=0"):
        lifecycle.encode_latents(s1, shards, old_url, cfg=cfg)  # extraction does not return it as complete either


@pytest.mark.parametrize("override", ["data.hflip=true", "stage1.encoder_noise=learned"])
def test_context_with_mirrors_or_a_learned_variance_is_refused_before_any_compute(override):
    from ul_pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="stage2.context_frames"):
        load_config("smoke_video", [override])
    load_config("smoke_video", [override, "stage2.context_frames=0"])  # without context both still work


def test_a_complete_context_store_serves_a_run_without_context(video_encoded, tmp_path):
    """Setting stage2.context_frames to 0 (a no-context baseline, a Stage-2-only change) keeps the encoder, so
    Dagster's latent_store asset encodes into the same store: a complete store whose extra z_clean_context is
    simply unused must be returned, not refused. An incomplete one is still refused (resuming it without the
    context encoding would mark blocks done with z_clean_context unwritten)."""
    import shutil

    import zarr

    _, shards, s1, store_url = video_encoded
    url = str(tmp_path / "ctx4.zarr")
    shutil.copytree(store_url, url)
    no_context = load_config("smoke_video", [*VIDEO_FAST, "stage2.context_frames=0"])
    store = lifecycle.encode_latents(s1, shards, url, cfg=no_context)
    assert store.meta["complete"] and store.meta["context_frames"] == 4  # untouched, still says what it holds
    assert stage2_batches(no_context, store).fields == ("z_clean", "labels")
    group = zarr.open_group(url, mode="r+")
    group.attrs["ul"] = {**group.attrs["ul"], "complete": False}
    with pytest.raises(LatentStoreError, match="its context encoding is for context_frames=4"):
        lifecycle.encode_latents(s1, shards, url, cfg=no_context)
