"""Video evaluation: per-frame PSNR, frame strips and GIFs, and the FVD wiring."""


import numpy as np
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
