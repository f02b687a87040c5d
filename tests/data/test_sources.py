"""Sources: Fashion-MNIST IDX files, image folders (local and S3), conversion to channels/resolution."""

import gzip
import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

from ul_pipeline.data.fashion_mnist import DEBIAN_ROOT, IdxFormatError, load_fashion_mnist, read_idx_gz
from ul_pipeline.data.sources import fashion_mnist_source, ImageFolderSource
from ul_pipeline.data.codecs import convert_array
from ul_pipeline.data.storage import url_to_fs


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_fmnist_folder(root, images, labels, prefixes=("train", "t10k")):
    for prefix in prefixes:
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))


def test_idx_round_trip_and_fashion_mnist_source(tmp_path, fmnist_400):
    images, labels = fmnist_400
    _write_fmnist_folder(tmp_path, images[:300], labels[:300], ("train",))
    _write_fmnist_folder(tmp_path, images[300:], labels[300:], ("t10k",))
    got_images, got_labels = load_fashion_mnist("test", str(tmp_path))
    assert np.array_equal(got_images, images[300:]) and np.array_equal(got_labels, labels[300:])

    source = fashion_mnist_source(str(tmp_path))  # train then test, padded 28 -> 32 with zeros
    assert len(source) == 400
    s = source[305]
    assert s.key == "fmnist-test-000005" and source[7].key == "fmnist-train-000007"
    assert s.image.shape == (1, 32, 32) and s.image.dtype == np.uint8
    assert np.array_equal(s.image[0, 2:30, 2:30], images[305]) and s.image[0, :2].sum() == 0
    assert s.image[0, :, :2].sum() == 0 and s.image[0, 30:].sum() == 0 and s.image[0, :, 30:].sum() == 0
    assert s.label == labels[305] and s.info["original_size"] == [28, 28]
    rgb = fashion_mnist_source(str(tmp_path), channels=3)[0].image
    assert rgb.shape == (3, 32, 32) and (rgb == rgb[:1]).all()


def test_idx_errors_name_the_file(tmp_path, fmnist_400):
    images, labels = fmnist_400
    with pytest.raises(IdxFormatError, match="t10k-images-idx3-ubyte.gz: file not found"):
        load_fashion_mnist("test", str(tmp_path))
    _write_fmnist_folder(tmp_path, images[:10], labels[:10], ("t10k",))
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-20])  # truncated gzip
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_fashion_mnist("test", str(tmp_path))
    bad.write_bytes(gzip.compress(_idx_bytes(images[:10])[:-5]))  # short payload
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte.gz: IDX payload has"):
        read_idx_gz(str(bad))
    bad.write_bytes(gzip.compress(b"\x1f\x8bnot idx"))
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte.gz: not an IDX file"):
        read_idx_gz(str(bad))
    _write_fmnist_folder(tmp_path, images[:10], labels[:9], ("t10k",))
    with pytest.raises(IdxFormatError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist("test", str(tmp_path))


@pytest.mark.skipif(not os.path.exists(f"{DEBIAN_ROOT}/t10k-images-idx3-ubyte.gz"),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_matches_fixture(fmnist_400):
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.array_equal(images[:400], fmnist_400[0]) and np.array_equal(labels[:400], fmnist_400[1])


def test_convert_array_resizes_and_crops():
    img = np.full((1, 40, 60), 200, dtype=np.uint8)
    out = convert_array(img, 32, 3)  # shorter side 40 -> 32, center crop, gray -> RGB
    assert out.shape == (3, 32, 32) and (out == 200).all()
    padded = convert_array(img, 32, 1, fit="pad")  # longer side 60 -> 32, black bars top/bottom
    assert padded.shape == (1, 32, 32) and padded[0, 0].max() == 0 and padded[0, 16].min() == 200


def _png(color, size, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _make_folder(fs, root):
    files = {"dog/a.png": _png((250, 0, 0), (40, 30)), "dog/sub/b.v2.png": _png(128, (16, 16), "L"),
             "cat/c.png": _png((0, 0, 250, 255), (64, 64), "RGBA"), "cat/notes.txt": b"ignored"}
    for name, data in files.items():
        path = f"{root}/{name}"
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, data)


def _check_folder_source(source):
    assert source.classes == ["cat", "dog"]  # sorted -> labels 0, 1
    samples = list(source)
    assert [s.key for s in samples] == ["cat-c", "dog-a", "dog-sub_b_v2"]
    assert [s.label for s in samples] == [0, 1, 1]
    assert all(s.image.shape == (3, 32, 32) and s.image.dtype == np.uint8 for s in samples)
    assert samples[0].image[2].min() > 240 and samples[1].image[0].min() > 240
    assert samples[1].info["original_size"] == [30, 40] and samples[1].info["class_name"] == "dog"


def test_image_folder_local(tmp_path):
    fs, root = url_to_fs(str(tmp_path / "imgs"))
    _make_folder(fs, root)
    _check_folder_source(ImageFolderSource(str(tmp_path / "imgs"), resolution=32, channels=3))
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="broken.png"):
        list(ImageFolderSource(str(tmp_path / "imgs"), resolution=32, channels=3))


def test_image_folder_s3(s3_server):
    url = s3_server.url("imgs")
    fs, root = url_to_fs(url, s3_server.storage_options)
    _make_folder(fs, root)
    _check_folder_source(ImageFolderSource(url, resolution=32, channels=3, storage_options=s3_server.storage_options))
