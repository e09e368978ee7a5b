"""Folders of PNG/JPEG images as datasets (read with Pillow).

Layouts (hidden files and files of other types are ignored):

- ``FOLDER/train/`` and ``FOLDER/test/``: the two splits;
- ``FOLDER/train/`` alone, or images directly in ``FOLDER``: one split, of which a seeded
  10% is held out as the test split (as for a single array);
- in each of these, either the images themselves or one sub-folder per class (like
  torchvision's ``ImageFolder``): the sorted class names of the training split become
  labels 0..C-1; the test split's class folders must be among them.

Every image must have the size and mode of the first (else one error naming the first
offending file), after its EXIF orientation is applied (a photo stored sideways with an
orientation tag is read upright, as image viewers show it). Grey images (mode ``L``; bilevel
``1`` becomes 0/255; 1-, 2- and 4-bit grey PNGs scaled to 0..255) load as (N, H, W) uint8;
colour images channel-first as (N, C, H, W) uint8: ``RGB`` (and ``CMYK``, ``YCbCr``,
palette ``P`` without transparency) as C = 3, ``RGBA`` (and grey with alpha ``LA``, palette
with transparency) as C = 4. Images of more than 8 bits per channel (16-bit grey ``I;16``,
16-bit RGB, RGBA and grey-with-alpha PNGs), 32-bit integer (``I``) and float (``F``) images
are refused, never cut to 8 bits.

Bounded memory: every file's header is read first (Pillow reads sizes without decoding),
and the folder's decoded size, counted as the float32 copy that model inputs are (4 bytes
per value), is checked against :func:`vaekit.data.idx.max_data_bytes` before any image is
decoded; images beyond Pillow's decompression-bomb limit are refused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.data.idx import check_values, max_data_bytes, open_data_file, short_reason
from vaekit.errors import DataError
from vaekit.io import shown

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


@dataclass(frozen=True)
class _Header:
    """What an image's header says: (width, height) once its EXIF orientation is applied,
    the stored mode, and the mode it is loaded as."""

    size: tuple[int, int]
    mode: str
    target: str


def _read_images(files: list[Path]) -> tuple[np.ndarray, str]:
    """Decode ``files`` into one (N, H, W) or (N, C, H, W) uint8 array; also 'HxW MODE'.
    Every header is read, and the whole array's size checked, before anything is decoded."""
    first, head = files[0], _header(files[0])
    for file in files[1:]:
        _same(file, _header(file), first, head)
    channels = CHANNELS[head.target]
    w, h = head.size
    shape = (len(files), h, w) if channels == 1 else (len(files), channels, h, w)
    check_values(math.prod(shape), np.dtype(np.uint8),
                 f"the {len(files)} images of {shown(first.parent)} ({_describe(head)})")
    out = np.empty(shape, np.uint8)
    for i, file in enumerate(files):
        pixels = _decode(file, head, first)  # (H, W) or (H, W, C)
        out[i] = pixels if channels == 1 else pixels.transpose(2, 0, 1)
    target = f" read as {head.target}" if head.target != head.mode else ""
    return out, _describe(head) + target


def _describe(head: _Header) -> str:
    """Pillow's (width, height) and mode as 'HxW MODE' (rows first, like the array shape)."""
    return f"{head.size[1]}x{head.size[0]} {head.mode}"


def _same(file: Path, head: _Header, first: Path, want: _Header) -> None:
    """Refuse an image whose size or mode differs from the first one's."""
    if (head.size, head.mode) != (want.size, want.mode):
        raise DataError(f"{shown(file)} is {_describe(head)}, but the first image "
                        f"{shown(first)} is {_describe(want)} (height x width, mode)",
                        "convert every image to one size and mode (e.g. Pillow's "
                        "im.convert(...).resize(...))")


@contextmanager
def _image(file: Path) -> Iterator[Any]:
    """The lazily opened Pillow image of ``file`` (its header read, nothing decoded);
    Pillow's failures and its decompression-bomb error become one DataError line."""
    from PIL import Image

    with open_data_file(file, "image", limit=max_data_bytes()) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning: sizes are checked here
        try:
            with Image.open(f) as im:
                yield im
        except DataError:
            raise
        except Exception as err:  # Pillow's decoders raise many types on malformed files
            raise _unreadable(file, err) from None


def _header(file: Path) -> _Header:
    """The header of ``file`` (nothing decoded), refusing modes vaekit does not read."""
    with _image(file) as im:
        return _header_of(im, file)


def _header_of(im: Any, file: Path) -> _Header:
    mode, info = im.mode, im.info
    target = "RGBA" if mode == "P" and "transparency" in info else CONVERT.get(mode)
    rawmodes = [t.args if isinstance(t.args, str) else str(t.args) for t in im.tile]
    if target is None or any(";16" in r for r in rawmodes):
        bits = ("16-bit pixels (image mode {}, 16 bits per channel)" if target is not None
                else "16-bit pixels (image mode {})" if "16" in mode
                else "16-bit or floating-point pixels (image mode {})").format(mode)
        raise DataError(f"{shown(file)} has {bits}, which vaekit does not read (it reads 8 "
                        "bits per channel)",
                        "convert the images to 8-bit grey, RGB or RGBA (e.g. PNG mode L or RGB)")
    w, h = im.size
    return _Header((h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h), mode, target)


def _orientation(im: Any) -> int:
    """The EXIF orientation tag (1: upright) where the header holds it; a PNG whose eXIf
    chunk follows the pixels is checked again once decoded."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # Pillow would decode the image to look further
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a malformed EXIF block: decoding reports it, or reads it as upright
        return 1


def _decode(file: Path, want: _Header, first: Path) -> np.ndarray:
    from PIL import ImageOps

    with _image(file) as im:
        _same(file, _header_of(im, file), first, want)  # the file may have changed since
        ImageOps.exif_transpose(im, in_place=True)  # decodes; upright as viewers show it
        if im.size != want.size:
            raise DataError(f"{shown(file)} is {im.size[1]}x{im.size[0]} once its EXIF "
                            f"orientation is applied, but the first image {shown(first)} is "
                            f"{_describe(want)}", "store every image upright at one size")
        return np.asarray(im.convert(want.target) if im.mode != want.target else im, np.uint8)


def _unreadable(file: Path, err: Exception) -> DataError:
    from PIL import UnidentifiedImageError

    why = ("Pillow does not recognise it as an image" if isinstance(err, UnidentifiedImageError)
           else short_reason(err))
    return DataError(f"cannot read image {shown(file)}: {why}", "replace or remove the file")
