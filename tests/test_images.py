"""Image folders (PNG/JPEG via Pillow) as datasets, colour arrays channel-first, and
`vaekit train --data FOLDER` end to end on colour images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data.datasets import load_dataset
from vaekit.errors import DataError


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) > 10
    return msg


def save(path, array: np.ndarray, mode: str | None = None) -> np.ndarray:
    """Write ``array`` (H, W) or (H, W, C) uint8 as an image; returns it channel-first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    (im.convert(mode) if mode else im).save(path)
    return array if array.ndim == 2 else array.transpose(2, 0, 1)


def rgb(rng: np.random.Generator, h: int = 6, w: int = 5, c: int = 3) -> np.ndarray:
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def test_train_test_folders_with_classes_load_channel_first_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    want = {"train": [], "test": []}
    for split, n in (("train", 4), ("test", 2)):
        for label, cls in enumerate(("bird", "cat", "dog")):
            for i in range(n):
                x = save(tmp_path / split / cls / f"{i}.png", rgb(rng))
                want[split].append((x, label))
    (tmp_path / "train" / "README.txt").write_text("other files are ignored")
    ds = load_dataset(str(tmp_path))
    assert ds.train.shape == (12, 3, 6, 5) and ds.test.shape == (6, 3, 6, 5)
    assert ds.train.dtype == torch.uint8 and ds.levels == 256 and ds.is_image
    assert ds.shape == (3, 6, 5) and ds.num_classes == 3
    for split, x, y in (("train", ds.train, ds.train_y), ("test", ds.test, ds.test_y)):
        assert [int(v) for v in y] == [label for _, label in want[split]]
        for got, (expected, _) in zip(x, want[split], strict=True):  # PNG is lossless
            assert np.array_equal(got.numpy(), expected)
    assert "3 classes (bird, cat, dog)" in ds.source


def test_flat_folder_holds_out_ten_percent_and_says_so(tmp_path):
    rng = np.random.default_rng(1)
    pixels = [save(tmp_path / "imgs" / f"{i:02d}.png", rng.integers(0, 256, (4, 7), np.uint8))
              for i in range(20)]
    ds = load_dataset(str(tmp_path / "imgs"))
    assert (len(ds.train), len(ds.test)) == (18, 2)
    assert ds.train.shape[1:] == (4, 7) and ds.train_y is None and ds.levels == 256
    assert "10% held out" in ds.source
    rows = sorted(map(bytes, torch.cat([ds.train, ds.test]).numpy()))
    assert rows == sorted(map(bytes, pixels))  # every image once
    assert torch.equal(load_dataset(str(tmp_path / "imgs")).test, ds.test)  # seeded


def test_flat_class_folders_and_train_only_layout(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        for i in range(10):
            save(tmp_path / "flat" / cls / f"{i}.png", rgb(rng))
            save(tmp_path / "only" / "train" / cls / f"{i}.jpg", rgb(rng))
    flat = load_dataset(str(tmp_path / "flat"))
    assert (len(flat.train), len(flat.test)) == (18, 2) and flat.num_classes == 2
    only = load_dataset(str(tmp_path / "only"))
    assert only.train.shape[1:] == (3, 6, 5) and "10% held out" in only.source


@pytest.mark.parametrize("mode, shape", [("RGBA", (4, 6, 5)), ("L", (6, 5)), ("1", (6, 5)),
                                         ("P", (3, 6, 5)), ("LA", (4, 6, 5))])
def test_image_modes(tmp_path, mode, shape):
    rng = np.random.default_rng(3)
    for i in range(5):
        save(tmp_path / f"{i}.png", rgb(rng, c=3 if mode == "P" else 4), mode)
    ds = load_dataset(str(tmp_path))
    assert ds.shape == shape and ds.train.dtype == torch.uint8 and ds.levels == 256
    if mode == "1":
        assert set(torch.cat([ds.train, ds.test]).unique().tolist()) <= {0, 255}


def test_sixteen_bit_images_are_refused(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((4, 4), 1000 * i, np.uint16)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    assert "8-bit" in one_line(err)


@pytest.mark.parametrize("odd", ["size", "mode"])
def test_one_size_and_mode_or_an_error_naming_the_file(tmp_path, odd):
    rng = np.random.default_rng(4)
    for i in range(4):
        save(tmp_path / "train" / f"{i}.png", rgb(rng))
        save(tmp_path / "test" / f"{i}.png", rgb(rng))
    if odd == "size":
        save(tmp_path / "test" / "2.png", rgb(rng, h=7))
    else:
        save(tmp_path / "test" / "2.png", rgb(rng), "L")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    msg = one_line(err)
    assert str(tmp_path / "test" / "2.png") in msg and "first image" in msg
    assert ("7x5" if odd == "size" else " L,") in msg


def test_bad_image_folders_end_in_one_line(tmp_path):
    rng = np.random.default_rng(5)
    for i in range(3):
        save(tmp_path / "corrupt" / f"{i}.png", rgb(rng))
    (tmp_path / "corrupt" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "corrupt"))
    assert "cannot read image" in one_line(err) and "1.png" in str(err.value)
    save(tmp_path / "mixed" / "a.png", rgb(rng))
    save(tmp_path / "mixed" / "cls" / "b.png", rgb(rng))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "mixed"))
    assert "mixes images" in one_line(err)
    for split, cls in (("train", "a"), ("test", "zebra")):
        save(tmp_path / "classes" / split / cls / "0.png", rgb(rng))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "classes"))
    assert "zebra" in one_line(err)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "corrupt" / "0.png"))
    assert "single image" in one_line(err)
    save(tmp_path / "one" / "0.png", rgb(rng))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "one"))
    assert "at least 2" in one_line(err)


def test_image_folder_size_is_checked_before_decoding(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    for i in range(10):
        save(tmp_path / f"{i}.png", rgb(rng, h=32, w=32))
    monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", "10K")  # 10 x 3 x 32 x 32 = 30 KiB
    decoded = []
    monkeypatch.setattr("vaekit.data.images._decode", lambda *a: decoded.append(a))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    assert "more than the limit" in one_line(err) and "VAEKIT_MAX_DATA_BYTES" in str(err.value)
    assert decoded == []


def test_colour_arrays_are_channel_first(tmp_path):
    x = np.random.default_rng(7).integers(0, 256, (10, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "first.npy", x)
    ds = load_dataset(str(tmp_path / "first.npy"))
    assert ds.shape == (3, 8, 8) and ds.levels == 256 and ds.is_image
    np.save(tmp_path / "last.npy", x.transpose(0, 2, 3, 1))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "last.npy"))
    assert "channel-first" in one_line(err) and "transpose(0, 3, 1, 2)" in str(err.value)


def test_train_on_a_folder_of_colour_images(tmp_path, cli):
    rng = np.random.default_rng(8)
    for split, n in (("train", 24), ("test", 6)):
        for cls in ("red", "blue"):
            for i in range(n // 2):
                save(tmp_path / "data" / split / cls / f"{i}.png", rgb(rng, h=8, w=8))
    run = tmp_path / "run"
    r = cli("train", "--data", tmp_path / "data", "--hidden", "16", "--latent-dim", "2",
            "--epochs", "1", "--device", "cpu", "--no-progress", "--likelihood", "gaussian",
            "--out", run)
    assert r.code == 0, r.err
    log = (run / "train.log").read_text()
    assert "image folder" in log and "shape (3, 8, 8)" in log and "256 levels" in log
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and np.isfinite(rows[-1]["val_elbo"])
    r = cli("sample", run, "-n", "4")
    assert r.code == 0, r.err
    assert np.load(run / "samples.npy").shape == (4, 3, 8, 8)
