"""Video evaluation: per-frame PSNR, frame strips and GIFs, the FVD wiring, the samplers it records and
the encoder check."""

import numpy as np
import pytest
import torch


def test_video_eval_helpers_and_fvd_wiring(monkeypatch):
    """Per-frame PSNR, frame strips/GIFs, and FVD through the `ul_pipeline.evaluation.fvd` interface (a stand-in here)."""
    import sys
    import types

    from ul_pipeline.evaluation import video as video_eval

    clips = torch.randint(0, 256, (3, 1, 4, 8, 8), dtype=torch.uint8)
    recon = clips.clone()
    recon[:, :, 2] = 255 - recon[:, :, 2]  # only frame 2 is wrong
    psnr = video_eval.frame_psnr(clips, recon)
    assert psnr.shape == (3, 4) and (psnr[:, [0, 1, 3]] == 100.0).all() and (psnr[:, 2] < 20).all()
    assert video_eval.to_thwc(clips).shape == (3, 4, 8, 8, 1)

    calls = []
    fake = types.ModuleType("ul_pipeline.evaluation.fvd")

    def fvd(real, generated, **kw):
        calls.append((real.shape, generated.shape))
        return float(np.abs(real.astype(float) - generated).mean()), {"detector": "stand-in", "num_real": len(real)}

    fake.fvd = fvd
    monkeypatch.setitem(sys.modules, "ul_pipeline.evaluation.fvd", fake)
    result = {"context_frames": 4}
    video_eval._fvd_into(result, clips, recon, clips, print)
    assert result["rfvd"] > 0 and result["fvd"] == 0.0 and calls == [((3, 4, 8, 8, 1), (3, 4, 8, 8, 1))] * 2
    assert result["fvd_protocol"]["detector"] == "stand-in" and result["fvd_protocol"]["context_frames"] == 4
    assert result["fvd_protocol"]["context_frames_included"] is True

    monkeypatch.setitem(sys.modules, "ul_pipeline.evaluation.fvd", None)  # no detector: said, never a 0
    missing = {}
    video_eval._fvd_into(missing, clips, recon, clips, print)
    assert "fvd" not in missing and "not available" in missing["fvd_missing"]


@pytest.fixture(scope="module")
def video_base(video_encoded, tmp_path_factory):
    """(cfg, shards, Stage-1 checkpoint, base-model checkpoint) of the briefly trained smoke_video chain."""
    from ul_pipeline import lifecycle

    cfg, shards, s1, store_url = video_encoded
    torch.set_num_threads(1)
    s2 = lifecycle.run_stage2(cfg, store_url, tmp_path_factory.mktemp("video_base") / "s2").checkpoint
    return cfg, shards, s1, s2


def test_video_evaluation_runs_the_sampler_it_records(video_base, tmp_path, monkeypatch):
    """sample.eta, sample.decoder_eta and compute.precision reach the samplers that ran (they were
    recorded but ignored), while the context is encoded in fp32 as the latent store encoded it."""
    from ul_pipeline.config import load_config
    from ul_pipeline.evaluation import video as video_eval
    from ul_pipeline.evaluation.image import evaluate
    from ul_pipeline.stage1 import decoders
    from ul_pipeline.stage2 import frame_conditioned
    from tests.conftest import VIDEO_FAST

    _, shards, s1, s2 = video_base
    ran = []

    def recording(who, real):
        def sampler(*args, eta=1.0, **kwargs):
            ran.append((who, eta, torch.is_autocast_enabled("cpu")))
            return real(*args, eta=eta, **kwargs)
        return sampler

    def context(*args, **kwargs):
        ran.append(("context", None, torch.is_autocast_enabled("cpu")))
        return real_context(*args, **kwargs)

    real_context = video_eval.context_z0
    monkeypatch.setattr(frame_conditioned, "ancestral_sample", recording("base", frame_conditioned.ancestral_sample))
    monkeypatch.setattr(decoders, "ancestral_sample", recording("decoder", decoders.ancestral_sample))
    monkeypatch.setattr(video_eval, "context_z0", context)
    cfg = load_config("smoke_video", [*VIDEO_FAST, "sample.eta=0.0", "sample.decoder_eta=0.5", "compute.precision=bf16",
                                      "eval.num_samples=8", "sample.batch_size=8"])
    result = evaluate(s1, shards, tmp_path, base_checkpoint=s2, cfg=cfg, log=lambda _: None)
    assert (result["sampler"], result["eta"], result["decoder_eta"], result["sampler_precision"]) == \
        ("ddim-eta", 0.0, 0.5, "bf16")
    assert result["context_frames"] == 4
    by = {who: [(eta, amp) for w, eta, amp in ran if w == who] for who in ("base", "decoder", "context")}
    assert by["base"] == [(0.0, True)]  # one batch of 8 clips
    assert by["decoder"] == [(0.5, True)] * 2  # reconstructions, then samples
    assert by["context"] == [(None, False)]


def test_video_evaluation_refuses_a_base_model_of_another_encoder(video_base, tmp_path):
    """The check the image evaluation makes: latents of another encoder decode to nonsense, so say so first."""
    from ul_pipeline.evaluation.image import evaluate
    from ul_pipeline.train.checkpoint import save_checkpoint

    cfg, shards, s1, s2 = video_base
    other = tmp_path / "s2" / "last.pt"
    save_checkpoint(other, {**torch.load(s2, weights_only=True), "encoder_sha256": "0" * 64})
    with pytest.raises(ValueError, match=f"base model {other} was trained on latents of encoder 0000"):
        evaluate(s1, shards, tmp_path / "e", base_checkpoint=other, cfg=cfg, log=lambda _: None)
    assert not (tmp_path / "e" / "metrics.json").exists()
