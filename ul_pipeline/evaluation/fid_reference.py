"""Reference features for FID/KID: the real held-out images' features, computed once and cached.

Every evaluation of one dataset compares against the same N real images, whose Inception features
cost minutes on a CPU. They are stored beside the shards, as
`{shards_url}/fid_reference/{split}-n{N}-{manifest sha256[:12]}.npz`, holding the features (float32,
exactly what the fp32 network returned), the manifest's full sha256, the split, N and the feature
network's identity (its weights file hash). A cache is reused only when all of these match; when
the shards are rewritten (a new manifest hash) or the network changes, it is recomputed.
"""

from __future__ import annotations

import contextlib
import io
import time
import zipfile
from datetime import datetime, timezone
from typing import Callable

import numpy as np
from torch import Tensor

from ul_pipeline.data.storage import StorageOptions, creation_lock, join_url, url_to_fs, write_bytes_atomic
from ul_pipeline.evaluation.fid import FeatureExtractor, Progress

FORMAT_VERSION = 1
FOLDER = "fid_reference"


def reference_url(shards_url: str, split: str, num_samples: int, manifest_sha256: str) -> str:
    """Where the features of the first `num_samples` images of `split` are cached."""
    return join_url(shards_url, FOLDER, f"{split}-n{num_samples}-{manifest_sha256[:12]}.npz")


def _stale_reason(stored: dict, expected: dict) -> str | None:
    """Why a stored cache may not be used (the first differing field), or None when it matches."""
    for key, want in expected.items():
        have = stored.get(key)
        if have != want:
            return f"its {key} is {have!r}, expected {want!r}"
    return None


def load_reference(url: str, expected: dict, storage_options: StorageOptions = None
                   ) -> tuple[np.ndarray | None, str]:
    """(features float32 (N, D), '') when `url` holds a cache matching `expected`; else (None, why not)."""
    fs, path = url_to_fs(url, storage_options)
    if not fs.exists(path):
        return None, "no cache yet"
    try:
        with fs.open(path, "rb") as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
            stored = {k: data[k].item() for k in data.files if k != "features"}
            features = data["features"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated or foreign: recompute
        return None, f"unreadable ({type(e).__name__}: {e})"
    reason = _stale_reason(stored, expected)
    if reason is None and features.shape[0] != expected["num_samples"]:
        reason = f"it holds {features.shape[0]} feature rows, expected {expected['num_samples']}"
    return (None, f"stale: {reason}") if reason else (features, "")


def save_reference(url: str, features: np.ndarray, meta: dict, storage_options: StorageOptions = None) -> None:
    """Write the features (float32) and their provenance atomically (a crash leaves no partial cache)."""
    buf = io.BytesIO()
    np.savez(buf, features=features.astype(np.float32),
             created_at=np.array(datetime.now(timezone.utc).isoformat(timespec="seconds")),
             **{k: np.array(v) for k, v in meta.items()})
    fs, path = url_to_fs(url, storage_options)
    write_bytes_atomic(fs, path, buf.getvalue())


def reference_features(images: Tensor, features: FeatureExtractor, shards_url: str, *, split: str,
                       manifest_sha256: str, storage_options: StorageOptions = None,
                       log: Callable[[str], None] = print, progress: Progress | None = None) -> np.ndarray:
    """Features (float64 (N, D)) of `images`, the first N of `split` in the shards; cached beside them.

    `manifest_sha256` identifies the shards (`read_manifest(shards_url).sha256`). A cache that
    cannot be written (read-only storage) is reported through `log`; the features are still returned.
    """
    n = len(images)
    url = reference_url(shards_url, split, n, manifest_sha256)
    expected = {"format_version": FORMAT_VERSION, "manifest_sha256": manifest_sha256, "split": split,
                "num_samples": n, "feature_network": features.identity}
    with contextlib.ExitStack() as stack:  # concurrent evaluations wait for the first to compute it, then reuse it
        try:
            stack.enter_context(creation_lock(url, f"reference features {url}", storage_options, log=log))
        except OSError as e:  # read-only storage: no lock to take (and no cache will be written)
            log(f"reference features {url}: computed without a creation lock ({type(e).__name__}: {e})")
        cached, why = load_reference(url, expected, storage_options)
        if cached is not None:
            log(f"reused cached reference features {url}")
            return cached.astype(np.float64)
        t0 = time.perf_counter()
        feats = np.asarray(features(images, progress=progress), dtype=np.float32)  # the network computes fp32
        try:
            save_reference(url, feats, expected, storage_options)
            where = f"-> {url}"
        except OSError as e:  # e.g. read-only shards: the evaluation goes on, the next one recomputes
            where = f"(not cached: writing {url} failed: {type(e).__name__}: {e})"
    log(f"computed reference features of {n} {split} images in {time.perf_counter() - t0:.1f} s "
        f"({why}) {where}")
    return feats.astype(np.float64)
