"""FID/KID closed forms and the offline TF-Inception features."""

import numpy as np
import pytest
import torch

from ul_pipeline.evaluation.fid import FEATURE_DIM, InceptionFeatures, frechet_distance, kernel_inception_distance


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    d, n = 6, 200_000
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 1.0])
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((n, d)) * 2.0 + shift
    # ||mu_a - mu_b||^2 + Tr(I + 4I - 2*2I) = ||shift||^2 + d
    assert frechet_distance(a, b) == pytest.approx((shift**2).sum() + d, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_equals_the_reference_sqrtm_formula():
    """The eigenvalue route gives the reference (scipy sqrtm) number on rank-deficient covariances too."""
    from scipy import linalg

    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64))
    b = rng.normal(size=(200, 64)) ** 3 + 0.5  # non-Gaussian, other scale
    for x, y in ((a, b), (a[:40], b[:50])):  # the second pair has singular covariances
        s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
        ref = (((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s_x) + np.trace(s_y)
               - 2 * np.trace(linalg.sqrtm(s_x @ s_y).real))
        assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((800, 16)), rng.standard_normal((800, 16))
    same, _ = kernel_inception_distance(a, b, subsets=5, subset_size=400)
    diff, _ = kernel_inception_distance(a, b + 1.0, subsets=5, subset_size=400)
    assert abs(same) < 0.05 and diff > 10 * max(abs(same), 1e-3)


def test_inception_features_are_2048_d_finite_and_deterministic(fmnist_400):
    images = torch.nn.functional.pad(torch.from_numpy(fmnist_400[0][:6]).unsqueeze(1), (2, 2, 2, 2))
    features = InceptionFeatures(batch_size=3)
    f1, f2 = features(images), features(images)
    assert f1.shape == (6, FEATURE_DIM) and np.isfinite(f1).all()
    np.testing.assert_allclose(f1, f2, rtol=1e-5)
    assert np.abs(f1[0] - f1[1]).sum() > 0  # different images, different features
    with pytest.raises(ValueError, match="uint8"):
        features(images.float())


def test_inception_features_equal_the_reference_implementation(fmnist_400):
    """Our faster path (small batches, grayscale resized once) gives FidHelper.extract_feats' numbers."""
    images = torch.nn.functional.pad(torch.from_numpy(fmnist_400[0][10:16]).unsqueeze(1), (2, 2, 2, 2))
    features = InceptionFeatures()
    h = features.helper
    reference = h.extract_feats(images.expand(-1, 3, -1, -1), data_range=(0, 255), resize_hw=h.resize_hw,
                                resample_mode=h.resample_mode)  # (6, 2048), batches of 6, RGB resize
    np.testing.assert_allclose(features(images), reference, rtol=1e-4, atol=0)
    assert features.batch_size < len(images)  # the comparison crosses a batch boundary
    assert features.identity.startswith("tf-inception-pool3 default_1.pt sha256:") and len(features.identity) > 90
