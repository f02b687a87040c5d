"""The study's evaluation: KID +- SE against training images, stored sample features, cross-FID, common random numbers."""

import numpy as np
import pytest
import torch

from ul_pipeline.config import load_config
from ul_pipeline.evaluation import statistics
from ul_pipeline.evaluation.image import evaluate
from ul_pipeline.stage1 import UnifiedLatents
from tests.evaluation.conftest import EVAL, FakeFeatures

STUDY_EVAL = EVAL + ["eval.num_generated=24", "eval.kid_reference_size=50", "eval.cross_fid=true"]


def test_kid_against_training_images_with_its_se_and_the_features_kept(trained, tmp_path):
    cfg, shards, s1, s2 = trained
    cfg = load_config("smoke", STUDY_EVAL)
    features = FakeFeatures()
    result = evaluate(s1, shards, tmp_path / "e", base_checkpoint=s2, cfg=cfg, features=features, log=lambda m: None)
    # real (16 val), reconstructions, cross-reconstructions (val[16:32]), 24 samples, 50 training images
    assert features.calls == [16, 16, 16, 24, 50]
    assert result["num_generated"] == 24 and result["kid_reference_size"] == 50
    kept = np.load(result["generated_features"])
    assert kept.shape == (24, 16) and kept.dtype == np.float16
    assert result["kid_train_se"] > 0 and np.isfinite(result["kid_train"]) and np.isfinite(result["cross_fid"])
    # the stored features give the same KID as the evaluation (float16 storage aside)
    from ul_pipeline.data import load_split_tensor
    train = load_split_tensor(shards, "train")[0][:50]
    again = statistics.kid(features(train), kept.astype(np.float64))
    assert again.value == pytest.approx(result["kid_train"], rel=1e-2, abs=1e-4)


def test_samples_start_from_the_same_noise_whatever_the_decoder(trained, tmp_path, monkeypatch):
    """Common random numbers: the base sampler's stream does not depend on how the decoder draws."""
    cfg, shards, s1, s2 = trained
    seen = []
    real_decode = UnifiedLatents.decode

    def recording(self, z0, steps, generator=None, progress=None, eta=1.0, sampler=None):
        seen.append(z0.clone())
        return real_decode(self, z0, steps, generator, progress, eta, sampler)

    monkeypatch.setattr(UnifiedLatents, "decode", recording)
    for decoder_steps in (2, 5):  # the decoder draws a different amount of noise per batch
        c = load_config("smoke", EVAL + [f"sample.decoder_steps={decoder_steps}", "eval.num_samples=16",
                                         "sample.batch_size=8", "eval.fid=false"])
        evaluate(s1, shards, tmp_path / f"e{decoder_steps}", base_checkpoint=s2, cfg=c, log=lambda m: None)
    assert len(seen) == 8  # per evaluation: 2 batches reconstructed, then 2 batches sampled
    first, second = torch.cat(seen[2:4]), torch.cat(seen[6:8])
    assert torch.equal(first, second)
    assert not torch.equal(torch.cat(seen[:2]), torch.cat(seen[4:6]))  # (reconstructions share g: they differ)
