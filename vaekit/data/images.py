"""Folders of PNG/JPEG images as datasets (read with Pillow).

Layouts (hidden files and files of other types are ignored):

- ``FOLDER/train/`` and ``FOLDER/test/``: the two splits;
- ``FOLDER/train/`` alone, or images directly in ``FOLDER``: one split, of which a seeded
  10% is held out as the test split (as for a single array);
- in each of these, either the images themselves or one sub-folder per class (like
  torchvision's ``ImageFolder``): the sorted class names of the training split become
  labels 0..C-1; the test split's class folders must be among them.

Every image must have the size and mode of the first (else one error naming the first
offending file). Grey images (mode ``L``; bilevel ``1`` becomes 0/255) load as (N, H, W)
uint8; colour images channel-first as (N, C, H, W) uint8: ``RGB`` (and ``CMYK``, ``YCbCr``,
palette ``P`` without transparency) as C = 3, ``RGBA`` (and ``LA``, palette with
transparency) as C = 4. 16-bit and float images are refused. The whole array's size is
checked against :func:`vaekit.data.idx.max_data_bytes` before it is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaekit.data.idx import check_nbytes, open_data_file, short_reason
from vaekit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
# stored mode -> the mode it is loaded as (the first image decides for palette images)
CONVERT = {"L": "L", "1": "L", "RGB": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "RGBA": "RGBA",
           "LA": "RGBA", "PA": "RGBA", "P": "RGB"}


@dataclass
class ImageFolder:
    """Images (N, H, W) or (N, C, H, W) uint8, labels (N,) int64 or None; ``test`` is None for
    a single split (the caller holds out 10%)."""

    train: np.ndarray
    train_y: np.ndarray | None
    test: np.ndarray | None
    test_y: np.ndarray | None
    source: str


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as err:
        raise DataError(f"cannot list {folder}: {short_reason(err)}",
                        "check the folder and its permissions") from None


def _image_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]


def _class_dirs(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir() and _image_files(p)]


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and bool(_image_files(folder) or _class_dirs(folder))


def _scan(folder: Path) -> tuple[list[Path], list[str], list[int]]:
    """(image files, class names, class index per file); no classes: names and indices empty."""
    files, classes = _image_files(folder), _class_dirs(folder)
    if files and classes:
        raise DataError(f"{folder} mixes images ({files[0].name}) with class folders "
                        f"({classes[0].name}/)",
                        "put every image in a class folder, or remove the class folders")
    if not classes:
        return files, [], []
    per_class = [_image_files(c) for c in classes]
    labels = [i for i, fs in enumerate(per_class) for _ in fs]
    return [f for fs in per_class for f in fs], [c.name for c in classes], labels


def read_image_folder(path: Path) -> ImageFolder | None:
    """The images under ``path`` (layouts in the module docstring), or None if it has none."""
    train_dir, test_dir = path / "train", path / "test"
    if _has_images(train_dir) and _has_images(test_dir):
        (files, names, labels), (t_files, t_names, t_labels) = _scan(train_dir), _scan(test_dir)
        unknown = sorted(set(t_names) - set(names))
        if unknown:
            raise DataError(f"{test_dir} has class folder {unknown[0]!r}, which {train_dir} lacks",
                            "use the same class folders in train/ and test/")
        if not names or not t_names:  # labels for one split only: not usable as labels
            labels = t_labels = []
        t_labels = [names.index(t_names[i]) for i in t_labels]
        x, kind = _read_images(files + t_files)  # one size and mode for both splits
        n = len(files)
        source = (f"{path} (image folder: {n} train/ and {len(t_files)} test/ images, {kind}"
                  f"{_classes_note(names if labels else [])})")
        return ImageFolder(x[:n], _label_array(labels), x[n:], _label_array(t_labels), source)
    folder = train_dir if _has_images(train_dir) else path
    if not _has_images(folder):
        return None
    files, names, labels = _scan(folder)
    x, kind = _read_images(files)
    source = (f"{folder} (image folder: {len(files)} images, {kind}{_classes_note(names)}; "
              "a seeded 10% held out as the test split)")
    return ImageFolder(x, _label_array(labels), None, None, source)


def _classes_note(names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f", {len(names)} classes ({shown}) as labels 0..{len(names) - 1}"


def _label_array(labels: list[int]) -> np.ndarray | None:
    return np.asarray(labels, dtype=np.int64) if labels else None


def _read_images(files: list[Path]) -> tuple[np.ndarray, str]:
    """Decode ``files`` into one (N, H, W) or (N, C, H, W) uint8 array; also 'HxW MODE'."""
    first = files[0]
    size, mode, target = _probe(first)
    channels = CHANNELS[target]
    w, h = size
    shape = (len(files), h, w) if channels == 1 else (len(files), channels, h, w)
    check_nbytes(math.prod(shape), f"the {len(files)} images of {first.parent} "
                 f"({_describe(size, mode)})")
    out = np.empty(shape, np.uint8)
    for i, file in enumerate(files):
        pixels = _decode(file, size, mode, target, first)  # (H, W) or (H, W, C)
        out[i] = pixels if channels == 1 else pixels.transpose(2, 0, 1)
    return out, _describe(size, mode) + (f" read as {target}" if target != mode else "")


def _describe(size: tuple[int, int], mode: str) -> str:
    """Pillow's (width, height) and mode as 'HxW MODE' (rows first, like the array shape)."""
    return f"{size[1]}x{size[0]} {mode}"


def _probe(file: Path) -> tuple[tuple[int, int], str, str]:
    """(size, stored mode, mode to load as) from the first image's header."""
    from PIL import Image

    with open_data_file(file, "image") as f:
        try:
            with Image.open(f) as im:
                size, mode, info = im.size, im.mode, dict(im.info)
        except Exception as err:  # Pillow's decoders raise many types on malformed files
            raise _unreadable(file, err) from None
    target = CONVERT.get(mode)
    if mode == "P" and "transparency" in info:
        target = "RGBA"
    if target is None:
        raise DataError(f"{file} has image mode {mode} (16-bit or floating-point pixels), "
                        "which vaekit does not read",
                        "convert the images to 8-bit grey, RGB or RGBA (e.g. PNG mode L or RGB)")
    return size, mode, target


def _decode(file: Path, size: tuple[int, int], mode: str, target: str,
            first: Path) -> np.ndarray:
    from PIL import Image

    with open_data_file(file, "image") as f:
        try:
            with Image.open(f) as im:
                if im.size != size or im.mode != mode:
                    raise DataError(
                        f"{file} is {_describe(im.size, im.mode)}, but the first image {first} "
                        f"is {_describe(size, mode)} (height x width, mode)",
                        "convert every image to one size and mode (e.g. Pillow's "
                        "im.convert(...).resize(...))")
                return np.asarray(im.convert(target) if im.mode != target else im, np.uint8)
        except DataError:
            raise
        except Exception as err:  # Pillow's decoders raise many types on malformed files
            raise _unreadable(file, err) from None


def _unreadable(file: Path, err: Exception) -> DataError:
    from PIL import UnidentifiedImageError

    why = ("Pillow does not recognise it as an image" if isinstance(err, UnidentifiedImageError)
           else short_reason(err))
    return DataError(f"cannot read image {file}: {why}", "replace or remove the file")
