"""Feature-space quality of reconstructions and samples: rFID, the decoder's cross-FID, gFID, KID +- SE.

All numbers use the TF-Inception features (`fid.py`); the real images' features are cached beside
the shards (`fid_reference.py`), so every evaluation of one shard set compares against the same
reference. gFID uses the first `eval.num_samples` samples against as many held-out images (the
demo's protocol); with `eval.kid_reference_size` > 0, KID of all `eval.num_generated` samples is
also measured against that many training images, with its standard error (`statistics.kid`), and
the samples' features are written to `generated_features.npy` (float16) so that later paired
comparisons need no resampling.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ul_pipeline.data import load_split_tensor, read_manifest
from ul_pipeline.data.storage import StorageOptions
from ul_pipeline.evaluation.fid import FeatureExtractor

GENERATED_FEATURES = "generated_features.npy"


def feature_metrics(result: dict[str, Any], images: torch.Tensor, recon: torch.Tensor, samples: torch.Tensor | None,
                    cross: torch.Tensor | None, *, shards_url: str, cfg, device, out_dir: Path,
                    storage_options: StorageOptions, features: FeatureExtractor | None, timed,
                    progress: Callable[[str], Callable[[int, int], None]], log: Callable[[str], None]) -> None:
    """Add rfid, cross_fid, gfid, kid (+ kid_train, kid_train_se) to `result` (uint8 image batches in)."""
    from ul_pipeline.evaluation import statistics
    from ul_pipeline.evaluation.fid import InceptionFeatures, frechet_distance, kernel_inception_distance
    from ul_pipeline.evaluation.fid_reference import reference_features

    features = InceptionFeatures(device) if features is None else features
    manifest_sha256 = read_manifest(shards_url, storage_options).sha256
    n = len(images)
    with timed("features_real"):
        f_real = reference_features(images, features, shards_url, split="val", manifest_sha256=manifest_sha256,
                                    storage_options=storage_options, log=log, progress=progress("reference features"))
    with timed("features_recon"):
        f_recon = features(recon, progress=progress("reconstruction features"))
    result["rfid"] = frechet_distance(f_real, f_recon)
    log(f"rFID {result['rfid']:.2f}")
    if cross is not None:
        with timed("features_cross"):
            f_cross = features(cross, progress=progress("cross-reconstruction features"))
        result["cross_fid"] = frechet_distance(f_real, f_cross)
        log(f"cross-FID (the decoder on other held-out images) {result['cross_fid']:.2f}")
    if samples is None:
        return
    with timed("features_gen"):
        f_gen = features(samples, progress=progress("sample features"))
    start = time.perf_counter()
    result["gfid"] = frechet_distance(f_real, f_gen[:n])
    result["kid"], result["kid_std"] = kernel_inception_distance(f_real, f_gen[:n], subset_size=min(1000, max(2, n // 2)))
    result["seconds_fid"] = time.perf_counter() - start
    log(f"gFID {result['gfid']:.2f}  KID {result['kid']:.4f} (N = {n})")
    k = int(cfg.eval.kid_reference_size)
    if k:
        with timed("features_train_reference"):
            train, _, _ = load_split_tensor(shards_url, "train", storage_options=storage_options, limit=k)
            if len(train) < k:
                raise ValueError(f"eval.kid_reference_size={k}: {shards_url} has only {len(train)} training images")
            f_train = reference_features(train, features, shards_url, split="train",
                                         manifest_sha256=manifest_sha256, storage_options=storage_options, log=log,
                                         progress=progress("training reference features"))
        est = statistics.kid(f_train, f_gen)
        result.update(kid_train=est.value, kid_train_se=est.se, kid_reference_size=k)
        path = Path(out_dir) / GENERATED_FEATURES
        np.save(path, f_gen.astype(np.float16))
        result["generated_features"] = str(path)
        log(f"KID {est.value:.5f} +- {est.se:.5f} of {len(f_gen)} samples against {k} training images")
