"""Image folders as users bring them: phone photos (EXIF), 16-bit and transparent PNGs, hidden and linked folders,
natural class order, the label map, and files that cannot be read, each named."""

import os

import numpy as np
import pytest
from PIL import Image

from ul_pipeline.cli import main
from ul_pipeline.data.manifest import read_manifest
from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources import ImageFolderSource

SHARDING = dict(shard_size=8, val_size=1, seed=0, resolution=32, channels=1)


def _save(path, img: Image.Image, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def _digit(fmnist_400, i: int) -> np.ndarray:  # a 32x32 grey picture with texture, not a flat square
    return np.pad(fmnist_400[0][i], 2)


def _one(folder, channels=1, **kw) -> np.ndarray:
    return ImageFolderSource(str(folder), resolution=32, channels=channels, **kw)[0].image


def test_exif_orientation_is_applied(tmp_path):
    upright = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))  # brightness grows to the right
    raw = np.ascontiguousarray(np.rot90(upright, 1))  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    _save(tmp_path / "photos" / "a" / "img.jpg", Image.fromarray(raw), exif=exif.tobytes(), quality=95)
    got = _one(tmp_path / "photos")[0].astype(float)
    corr = lambda a, b: np.corrcoef(a.ravel(), b.astype(float).ravel())[0, 1]  # noqa: E731
    assert corr(got, upright) > 0.99 and abs(corr(got, raw)) < 0.1


def test_16_bit_png_is_scaled_not_saturated(tmp_path, fmnist_400):
    digit = _digit(fmnist_400, 0)
    _save(tmp_path / "eight" / "a" / "x.png", Image.fromarray(digit))
    _save(tmp_path / "sixteen" / "a" / "x.png", Image.fromarray(digit.astype(np.uint16) * 257))
    assert Image.open(tmp_path / "sixteen" / "a" / "x.png").mode.startswith("I")
    eight, sixteen = _one(tmp_path / "eight"), _one(tmp_path / "sixteen")
    assert np.abs(eight.astype(int) - sixteen.astype(int)).max() <= 1
    assert (sixteen == 255).mean() == (eight == 255).mean()


def test_float_tiff_in_0_1_is_scaled(tmp_path, fmnist_400):
    digit = _digit(fmnist_400, 1)
    _save(tmp_path / "f" / "a" / "x.tif", Image.fromarray(digit.astype(np.float32) / 255.0, mode="F"))
    assert np.abs(_one(tmp_path / "f").astype(int) - digit.astype(int)).max() <= 1


def test_transparency_is_composited_on_the_background(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (200, 30, 30, 255)  # an opaque red square; around it transparent black
    _save(tmp_path / "emoji" / "a" / "x.png", Image.fromarray(rgba, mode="RGBA"))
    white = _one(tmp_path / "emoji", channels=3)
    assert (white[:, 0, 0] == 255).all() and tuple(white[:, 16, 16]) == (200, 30, 30)
    black = _one(tmp_path / "emoji", channels=3, background="#000000")
    assert (black[:, 0, 0] == 0).all()
    with pytest.raises(ValueError, match="data.background"):
        _one(tmp_path / "emoji", background="transparent-ish")


def test_palette_and_cmyk_are_converted(tmp_path):
    _save(tmp_path / "p" / "a" / "x.png", Image.new("RGB", (32, 32), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE))
    _save(tmp_path / "p" / "b" / "y.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)))  # red in CMYK
    src = ImageFolderSource(str(tmp_path / "p"), resolution=32, channels=3)
    assert tuple(src[0].image[:, 5, 5]) == (10, 200, 30)
    assert src[1].image[0].mean() > 200 > 60 > src[1].image[1].mean()


def test_hidden_folders_and_files_skipped_and_classes_in_natural_order(tmp_path, fmnist_400):
    for label, name in enumerate(["2", "10"]):
        _save(tmp_path / "digits" / name / "x.png", Image.fromarray(_digit(fmnist_400, label)))
    _save(tmp_path / "digits" / ".ipynb_checkpoints" / "x-checkpoint.png", Image.fromarray(_digit(fmnist_400, 3)))
    (tmp_path / "digits" / "2" / "._x.png").write_bytes(b"\0\5\26\7 macOS resource fork")  # not an image
    (tmp_path / "digits" / "2" / ".cache").mkdir()
    (tmp_path / "digits" / "2" / ".cache" / "y.png").write_bytes(b"")
    src = ImageFolderSource(str(tmp_path / "digits"), resolution=32, channels=1)
    assert src.classes == ["2", "10"] and src.class_names == ["2", "10"]
    assert [(s.key, s.label) for s in src] == [("2-x", 0), ("10-x", 1)]
    m = write_shards(src, str(tmp_path / "s"), num_classes=2, class_names=src.class_names, **SHARDING)
    assert read_manifest(m.url).class_names == ["2", "10"]


def test_symlinked_class_folder_is_followed(tmp_path, fmnist_400):
    _save(tmp_path / "elsewhere" / "cats" / "a.png", Image.fromarray(_digit(fmnist_400, 0)))
    _save(tmp_path / "data" / "dog" / "b.png", Image.fromarray(_digit(fmnist_400, 1)))
    os.symlink(tmp_path / "elsewhere" / "cats", tmp_path / "data" / "cat")
    os.symlink(tmp_path / "data", tmp_path / "data" / "dog" / "loop")  # a cycle is read once, not forever
    src = ImageFolderSource(str(tmp_path / "data"), resolution=32, channels=1)
    assert src.classes == ["cat", "dog"] and [(s.key, s.label) for s in src][:1] == [("cat-a", 0)]


def test_empty_folder_and_empty_file_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        ImageFolderSource(str(tmp_path / "empty"), resolution=32, channels=1, unconditional=True)
    (tmp_path / "zero" / "a").mkdir(parents=True)
    (tmp_path / "zero" / "a" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"zero/a/x.png: empty file \(0 bytes\)"):
        _one(tmp_path / "zero")
    (tmp_path / "zero" / "a" / "x.png").write_bytes(b"GIF89a but not really")
    with pytest.raises(ValueError, match="x.png: not an image Pillow can read") as e:
        _one(tmp_path / "zero")
    assert "BytesIO" not in str(e.value)


def test_cli_shard_prints_the_label_map_and_refuses_too_many_classes(tmp_path, fmnist_400, capsys):
    for i, name in enumerate(["b", "a", "c"]):
        for j in range(3):
            _save(tmp_path / "f" / name / f"{j}.png", Image.fromarray(_digit(fmnist_400, 3 * i + j)))
    common = ["-e", "smoke", f"data.uri={tmp_path / 'f'}", "data.source=image_folder", "data.val_size=2",
              "data.shard_size=4"]
    assert main(["shard", *common, "data.num_classes=3", "--out", str(tmp_path / "s")]) == 0
    assert "labels: 0=a, 1=b, 2=c" in capsys.readouterr().out
    assert read_manifest(str(tmp_path / "s")).class_names == ["a", "b", "c"]
    assert main(["shard", *common, "data.num_classes=2", "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert "3 class folders (a, b, c)" in err and "data.num_classes is 2" in err

