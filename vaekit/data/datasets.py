"""Named datasets and paths -> in-memory tensors (one tensor per split).

A name resolves, in order, from ``$VAEKIT_DATA`` (os.pathsep-separated roots), the user
cache (``$XDG_CACHE_HOME/vaekit`` or ``~/.cache/vaekit``) and ``/usr/share/datasets``.
Generated sets take options after a colon: ``ring:n=20000,noise=0.05``,
``manifold:r=2,d=16,n=20000``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.data import toy
from vaekit.data.idx import read_idx
from vaekit.errors import DataError


@dataclass
class Dataset:
    """Raw splits as stored: quantized images (integers, ``levels`` values) or floats."""

    name: str
    train: torch.Tensor  # (N, *shape)
    test: torch.Tensor  # (M, *shape)
    levels: int | None  # 256 for 8-bit images; None for continuous data
    source: str  # where it came from, for the record

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.levels is not None and len(self.shape) >= 2


IDX_NAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
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
    x_train, x_test = read_idx(train), read_idx(test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"train {x_train.shape} and test {x_test.shape} images differ in shape",
                        "use matching IDX files")
    levels = 256 if x_train.dtype == np.uint8 else None
    return Dataset(name, torch.from_numpy(x_train), torch.from_numpy(x_test), levels,
                   str(directory))


def _named_idx(name: str) -> Callable[[dict[str, str]], Dataset]:
    def load(_opts: dict[str, str]) -> Dataset:
        where = locate(name)
        if where is None:
            hint = ("run `apt-get install dataset-fashion-mnist` (Debian) or "
                    if name == "fashion-mnist" else "")
            roots = ", ".join(str(r / name) for r in data_roots())
            raise DataError(f"dataset {name!r} was not found in {roots}",
                            f"{hint}put its IDX files in one of those folders")
        return load_idx_dir(where, name)

    return load


def _digits(_opts: dict[str, str]) -> Dataset:
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images.astype(np.uint8))  # (1797, 8, 8), values 0..16
    train, test = _split(x, test_fraction=0.2, seed=0)
    return Dataset("digits", train, test, 17, "scikit-learn (bundled 8x8 digits)")


def _option(opts: dict[str, str], key: str, kind: type, default: float, name: str,
            minimum: float = 0) -> Any:
    """Pop option ``key`` converted to ``kind``, with one clear error for a bad value."""
    raw = opts.pop(key, default)
    try:
        value = kind(raw)
    except ValueError:
        raise DataError(f"option {key}={raw!r} of dataset {name!r} is not a {kind.__name__}",
                        f"write e.g. {name}:{key}={kind(default)}") from None
    if value < minimum:
        raise DataError(f"option {key}={value} of dataset {name!r} must be >= {minimum}",
                        f"write e.g. {name}:{key}={kind(default)}")
    return value


def _ring(opts: dict[str, str]) -> Dataset:
    n = _option(opts, "n", int, 10000, "ring", minimum=1)
    noise = _option(opts, "noise", float, 0.0, "ring")
    _no_more(opts, "ring")
    train, test = toy.ring(n, seed=0, noise=noise), toy.ring(max(n // 5, 1), seed=1, noise=noise)
    return Dataset("ring", train, test, None, f"generated: ring n={n} noise={noise}")


def _manifold(opts: dict[str, str]) -> Dataset:
    r = _option(opts, "r", int, 2, "manifold", minimum=1)
    d = _option(opts, "d", int, 16, "manifold", minimum=1)
    n = _option(opts, "n", int, 10000, "manifold", minimum=1)
    noise = _option(opts, "noise", float, 0.0, "manifold")
    _no_more(opts, "manifold")
    if not 0 < r <= d:
        raise DataError(f"manifold needs 0 < r <= d, got r={r}, d={d}", "e.g. manifold:r=2,d=16")
    train = toy.manifold(n, r, d, seed=0, noise=noise)
    test = toy.manifold(max(n // 5, 1), r, d, seed=1, noise=noise)
    return Dataset("manifold", train, test, None,
                   f"generated: {r}-dim manifold in R^{d}, n={n}, noise={noise}")


def _no_more(opts: dict[str, str], name: str) -> None:
    if opts:
        raise DataError(f"unknown option(s) {sorted(opts)} for dataset {name!r}",
                        "see `vaekit data list` for the options each generated set takes")


@dataclass(frozen=True)
class NamedDataset:
    description: str
    loader: Callable[[dict[str, str]], Dataset]
    generated: bool = False


REGISTRY: dict[str, NamedDataset] = {
    "fashion-mnist": NamedDataset("Fashion-MNIST 28x28 grey, 60k/10k (IDX)",
                                  _named_idx("fashion-mnist")),
    "mnist": NamedDataset("MNIST 28x28 grey, 60k/10k (IDX)", _named_idx("mnist")),
    "digits": NamedDataset("scikit-learn 8x8 digits, 17 grey levels, 1437/360", _digits),
    "ring": NamedDataset("ring x=z/10+z/||z|| in R^2 (options n, noise)", _ring, generated=True),
    "manifold": NamedDataset("r-dim manifold in R^d (options r, d, n, noise)", _manifold,
                             generated=True),
}


def locate(name: str) -> Path | None:
    """The first root holding the IDX files of ``name``, or None."""
    for root in data_roots():
        d = root / name
        if _find_idx(d, "train") and _find_idx(d, "test"):
            return d
    return None


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"ring:n=100,noise=0.1"`` -> ("ring", {"n": "100", "noise": "0.1"})."""
    name, _, rest = spec.partition(":")
    opts = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise DataError(f"bad dataset option {item!r} in {spec!r}", "write key=value pairs")
        opts[key.strip()] = value.strip()
    return name.strip(), opts


def load_dataset(spec: str) -> Dataset:
    """Load a named dataset (``vaekit data list``) or a directory / file path."""
    name, opts = parse_spec(spec)
    if name in REGISTRY:
        return REGISTRY[name].loader(opts)
    path = Path(spec).expanduser()
    if path.exists():
        return load_path(path)
    if os.sep in spec or "." in Path(spec).name:
        raise DataError(f"path {spec} does not exist", "check the --data path")
    raise DataError(f"unknown dataset {spec!r}",
                    f"use one of {', '.join(REGISTRY)} or a path (see `vaekit data list`)")


def load_path(path: Path) -> Dataset:
    """A folder of IDX files or train/test .npy files, or one .npz / .npy / IDX file."""
    if path.is_dir():
        if _find_idx(path, "train"):
            return load_idx_dir(path, path.name)
        if (path / "train.npy").is_file():
            train = _array(_load_npy(path / "train.npy"), path / "train.npy")
            test_file = path / "test.npy"
            if test_file.is_file():
                return _from_arrays(path.name, train, _array(_load_npy(test_file), test_file),
                                    str(path))
            return _from_arrays(path.name, *_split(train, 0.1, 0), str(path))
        raise DataError(f"{path} holds no dataset vaekit can read",
                        "put IDX files (train-images-idx3-ubyte.gz, t10k-...) or "
                        "train.npy/test.npy in it")
    if path.suffix == ".npz":
        return _load_npz(path)
    if path.suffix == ".npy":
        return _from_arrays(path.stem, *_split(_array(_load_npy(path), path), 0.1, 0), str(path))
    return _from_arrays(path.name, *_split(torch.from_numpy(read_idx(path)), 0.1, 0), str(path))


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"cannot read {path}: {err}", "save it with numpy.save") from None


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as err:
        raise DataError(f"cannot read {path}: {err}", "save it with numpy.savez") from None
    for tr, te in (("train", "test"), ("x_train", "x_test")):
        if tr in arrays:
            train = _array(arrays[tr], path)
            if te in arrays:
                return _from_arrays(path.stem, train, _array(arrays[te], path), str(path))
            return _from_arrays(path.stem, *_split(train, 0.1, 0), str(path))
    if len(arrays) == 1:
        only = _array(next(iter(arrays.values())), path)
        return _from_arrays(path.stem, *_split(only, 0.1, 0), str(path))
    raise DataError(f"{path} has arrays {sorted(arrays)}, none named train or x_train",
                    "save with numpy.savez(path, train=..., test=...)")


def _array(a: np.ndarray, path: Path) -> torch.Tensor:
    if a.ndim < 2 or a.shape[0] == 0:
        raise DataError(f"{path} holds an array of shape {a.shape}",
                        "store examples along the first axis: (N, features...) with N > 0")
    if a.dtype.kind not in "uif":
        raise DataError(f"{path} has dtype {a.dtype}", "store numbers (uint8 images or floats)")
    if a.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return torch.from_numpy(np.ascontiguousarray(a))


def _from_arrays(name: str, train: torch.Tensor, test: torch.Tensor, source: str) -> Dataset:
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"train {tuple(train.shape)} and test {tuple(test.shape)} differ in shape",
                        "store both splits with the same per-example shape")
    if train.is_floating_point():
        for split, t in (("train", train), ("test", test)):
            if not torch.isfinite(t).all():
                raise DataError(f"the {split} split of {source} contains NaN or Inf values",
                                "clean the data (drop or impute those entries) first")
        return Dataset(name, train, test, None, source)
    top = int(max(train.max(), test.max()))
    if int(min(train.min(), test.min())) < 0:
        raise DataError(f"{source} has negative integer values",
                        "store images as non-negative integers, or as floats")
    levels = 256 if train.dtype == torch.uint8 else top + 1
    dtype = torch.uint8 if top < 256 else torch.int64
    return Dataset(name, train.to(dtype), test.to(dtype), levels, source)


def _split(x: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(len(x) * test_fraction))
    return x[perm[n_test:]].clone(), x[perm[:n_test]].clone()


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
