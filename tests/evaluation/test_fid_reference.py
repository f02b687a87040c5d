"""Reference features are computed once per dataset and reused; new shards, network or a torn file recompute them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ul_pipeline.data import read_manifest
from ul_pipeline.evaluation.fid_reference import reference_features, reference_url, save_reference
from ul_pipeline.evaluation.image import evaluate
from tests.evaluation.conftest import FakeFeatures, make_shards


def test_reference_features_are_computed_once_and_recomputed_for_new_shards(trained, fmnist_400_source,
                                                                            tmp_path):
    cfg, shards, s1, s2 = trained
    features, logs = FakeFeatures(), []
    first = evaluate(s1, shards, tmp_path / "e1", base_checkpoint=s2, cfg=cfg, features=features, log=logs.append)
    assert features.calls == [16, 16, 16]  # real, reconstructions, samples
    assert any(line.startswith("computed reference features of 16 val images") for line in logs)
    logs = []
    evaluate(s1, shards, tmp_path / "e2", base_checkpoint=s2, cfg=cfg, features=features, log=logs.append)
    cache = reference_url(shards, "val", 16, read_manifest(shards).sha256)
    assert f"reused cached reference features {cache}" in logs
    assert features.calls == [16, 16, 16, 16, 16]  # only reconstructions and samples the second time
    second = evaluate(s1, shards, tmp_path / "e3", base_checkpoint=s2, cfg=cfg, features=features, log=print)
    assert second["rfid"] == first["rfid"] and second["gfid"] == first["gfid"]  # cached == computed

    # where the time went: every part, and the training/encoding times from the checkpoints
    for part in ("load", "bits", "reconstruct", "sample", "features_real", "features_recon", "features_gen", "fid"):
        assert first[f"seconds_{part}"] >= 0, part
    assert first["stage1_train_seconds"] > 0 and first["stage2_train_seconds"] > 0
    assert first["encode_seconds"] == 1.5

    # new shards (another split of the data): a new manifest hash, so the features are computed again
    old_sha = read_manifest(shards).sha256
    make_shards(fmnist_400_source, shards, seed=1)
    assert read_manifest(shards).sha256 != old_sha
    logs = []
    third = evaluate(s1, shards, tmp_path / "e4", base_checkpoint=s2, cfg=cfg, features=features, log=logs.append)
    assert features.calls[7:] == [16, 16, 16]
    assert any(line.startswith("computed reference features") for line in logs)
    assert third["rfid"] != first["rfid"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_cache_of_other_shards_or_another_network_is_not_used(fmnist_400, tmp_path, where, request):
    if where == "s3":
        s3 = request.getfixturevalue("s3_server")
        shards_url, options = s3.url("shards"), s3.storage_options
    else:
        shards_url, options = str(tmp_path / "shards"), None
    images = torch.from_numpy(fmnist_400[0][:8]).unsqueeze(1)
    images = torch.nn.functional.pad(images, (2, 2, 2, 2))  # (8, 1, 32, 32)
    features, logs = FakeFeatures(), []
    sha = "a" * 64
    url = reference_url(shards_url, "val", 8, sha)
    # a file under the right name whose content says other shards: never trusted
    save_reference(url, np.zeros((8, 16)), {"format_version": 1, "manifest_sha256": "a" * 63 + "b", "split": "val",
                                           "num_samples": 8, "feature_network": features.identity}, options)
    f1 = reference_features(images, features, shards_url, split="val", manifest_sha256=sha,
                            storage_options=options, log=logs.append)
    assert features.calls == [8] and "stale: its manifest_sha256" in logs[-1]
    f2 = reference_features(images, features, shards_url, split="val", manifest_sha256=sha,
                            storage_options=options, log=logs.append)
    assert features.calls == [8] and logs[-1] == f"reused cached reference features {url}"
    np.testing.assert_array_equal(f1, f2)
    assert np.abs(f1).sum() > 0
    other = FakeFeatures(dim=16)
    other.identity = "another-network"
    reference_features(images, other, shards_url, split="val", manifest_sha256=sha, storage_options=options,
                       log=logs.append)
    assert other.calls == [8] and "stale: its feature_network" in logs[-1]


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_cache_is_recomputed_and_rewritten(fmnist_400, tmp_path, keep):
    """A cache cut short (a full disk, a copy interrupted) is stale, never a crash."""
    images = torch.nn.functional.pad(torch.from_numpy(fmnist_400[0][:8]).unsqueeze(1), (2, 2, 2, 2))
    shards_url, sha, features, logs = str(tmp_path / "shards"), "c" * 64, FakeFeatures(), []
    first = reference_features(images, features, shards_url, split="val", manifest_sha256=sha, log=logs.append)
    cache = Path(reference_url(shards_url, "val", 8, sha))
    whole = cache.read_bytes()
    cache.write_bytes(whole[:int(len(whole) * keep)])
    again = reference_features(images, features, shards_url, split="val", manifest_sha256=sha, log=logs.append)
    assert features.calls == [8, 8] and "(unreadable (" in logs[-1]
    np.testing.assert_array_equal(first, again)
    assert cache.read_bytes() != whole[:int(len(whole) * keep)]  # rewritten whole
    reference_features(images, features, shards_url, split="val", manifest_sha256=sha, log=logs.append)
    assert features.calls == [8, 8] and logs[-1].startswith("reused cached reference features")
