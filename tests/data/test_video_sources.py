"""Video data: Moving Fashion-MNIST, the video folder source, clips through shards and the latent store."""

import io
import tarfile

import numpy as np
import pytest
import torch
import zarr

from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.latents.store import open_store
from ul_pipeline.data.loader import iter_split, load_split_tensor
from ul_pipeline.data.manifest import read_manifest, ShardError
from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources.video import MovingFashionMNIST, VideoFolderSource, resample_indices
from ul_pipeline.nets import build_stage1_nets

META = {"encoder_sha256": "v" * 64, "stage1_config": {"preset": "video_tiny"}, "logsnr_0": 5.0}


@pytest.fixture(scope="module")
def moving(fmnist_400):
    images, labels = fmnist_400
    return MovingFashionMNIST(images, labels, resolution=16, channels=1, frames=8, num_clips=40, seed=3)


def test_moving_fashion_mnist_is_deterministic_real_and_moving(moving, fmnist_400):
    s = moving[5]
    assert s.image.shape == (1, 8, 16, 16) and s.image.dtype == np.uint8
    np.testing.assert_array_equal(s.image, moving[5].image)  # a pure function of (seed, i)
    other = MovingFashionMNIST(*fmnist_400, resolution=16, frames=8, num_clips=40, seed=4)[5]
    assert not np.array_equal(s.image, other.image)
    assert s.label == int(fmnist_400[1][s.info["items"][0]])  # label = class of the first item
    assert s.info["item_labels"][0] == s.label
    clip = s.image[0].astype(np.int32)
    assert all(frame.sum() > 0 for frame in clip)  # items never leave the frame
    assert np.abs(clip[1:] - clip[:-1]).sum() > 0  # and they move
    assert len({moving[i].key for i in range(len(moving))}) == 40


def test_a_clip_round_trips_through_shards_and_the_latent_store(moving, tmp_path):
    url = str(tmp_path / "shards")
    manifest = write_shards(moving, url, shard_size=16, val_size=8, seed=0, resolution=16, channels=1,
                            num_classes=10, frames=8)
    assert read_manifest(url).frames == 8 and manifest.num_samples("train") == 32
    first = manifest.shards("train")["shard"][0]
    with tarfile.open(str(tmp_path / "shards" / first)) as tar:  # on disk: uint8 T x C x H x W .npy
        npy = [m for m in tar.getmembers() if m.name.endswith(".npy")][0]
        on_disk = np.load(io.BytesIO(tar.extractfile(npy).read()))
    assert on_disk.shape == (8, 1, 16, 16) and on_disk.dtype == np.uint8

    clips, labels, keys = load_split_tensor(url, "train")
    assert clips.shape == (32, 1, 8, 16, 16)
    by_key = {moving[i].key: moving[i] for i in range(len(moving))}
    for clip, label, key in zip(clips, labels, keys):
        np.testing.assert_array_equal(clip.numpy(), by_key[key].image)
        assert int(label) == by_key[key].label

    torch.manual_seed(0)
    encoder, _, _ = build_stage1_nets("video_tiny", (1, 8, 16, 16))
    encoder.eval()
    encode = lambda x: encoder(x.float() / 127.5 - 1.0)  # noqa: E731
    store_url = str(tmp_path / "latents.zarr")
    calls = []
    with pytest.raises(RuntimeError, match="boom"):  # crash after the first block ...
        extract_latents(url, "train", store_url, lambda x: (_ for _ in ()).throw(RuntimeError("boom"))
                        if calls else calls.append(1) or encode(x), META, block_size=16, batch_size=8)
    store = extract_latents(url, "train", store_url, encode, META, block_size=16, batch_size=8)  # ... resume
    plain = zarr.open_group(store_url, mode="r")  # readable without ul_pipeline
    assert plain["z_clean"].shape == (32, 4, 2, 4, 4)
    assert plain.attrs["ul"]["latent_shape"] == [4, 2, 4, 4] and plain.attrs["ul"]["complete"]
    with torch.no_grad():
        want = encode(clips).numpy()
    np.testing.assert_allclose(plain["z_clean"][:], want, rtol=1e-5, atol=1e-5)
    assert list(plain["keys"][:]) == keys
    assert len(open_store(store_url).meta["channel_mean"]) == 4


def test_clip_of_the_wrong_length_is_refused_naming_shard_and_key(moving, tmp_path):
    with pytest.raises(ValueError, match=r"mfmnist-3-\d{6}.*expected uint8 \(1, 6, 16, 16\)"):
        write_shards(moving, str(tmp_path / "bad"), shard_size=16, val_size=8, seed=0, resolution=16,
                     channels=1, num_classes=10, frames=6, limit=20)
    url = str(tmp_path / "ok")
    write_shards(moving, url, shard_size=16, val_size=4, seed=0, resolution=16, channels=1,
                 num_classes=10, frames=8, limit=20)
    manifest = read_manifest(url)
    table = manifest.table.with_columns(frames=manifest.table["frames"] * 0 + 6)
    bad = type(manifest)(manifest.url, table, manifest.sha256)
    with pytest.raises(ShardError, match=r"train-000000\.tar, sample .*clip is 1x8x16x16 .*, manifest says 1x6x16x16"):
        next(iter_split(url, "train", manifest=bad))


def _write_video(path, frames: int, fps: float, size=(24, 32)):
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    for t in range(frames):
        writer.write(np.full((*size, 3), 6 * t, dtype=np.uint8))  # brightness encodes the frame index
    writer.release()


def test_video_folder_resamples_to_fps_and_resizes(tmp_path):
    for cls, n in (("a", 40), ("b", 40)):
        (tmp_path / cls).mkdir()
        _write_video(tmp_path / cls / "clip1.avi", n, 20.0)
    src = VideoFolderSource(str(tmp_path), resolution=16, channels=3, frames=5, fps=10.0)
    assert src.classes == ["a", "b"] and len(src) == 2
    s = src[1]
    assert s.key == "b-clip1" and s.label == 1 and s.image.shape == (3, 5, 16, 16)
    means = s.image.reshape(3, 5, -1).mean(axis=(0, 2))
    np.testing.assert_allclose(means, [6 * 2 * t for t in range(5)], atol=3)  # every 2nd frame at 10 of 20 fps
    with pytest.raises(ValueError, match="too short"):
        VideoFolderSource(str(tmp_path), resolution=16, channels=1, frames=30, fps=10.0)[0]


def test_resample_indices():
    assert resample_indices(100, 30.0, 10.0, 4, "x") == [0, 3, 6, 9]
    assert resample_indices(10, 5.0, 10.0, 4, "x") == [0, 0, 1, 1]  # slower source: frames repeat


