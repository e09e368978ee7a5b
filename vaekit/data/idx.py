"""A validating reader and writer for the IDX format (MNIST, Fashion-MNIST), and the memory
limit that every data reader checks before it allocates.

Layout: magic = two zero bytes, a type code, the number of dimensions n; then n big-endian
uint32 sizes; then prod(sizes) values, big-endian. gzip is detected by content, not name.

Bounded memory: the header says how many bytes the body must have. A raw file's size must
match it. A gzip file must be able to hold it (deflate packs at most 1032 bytes into one, so
a 2 KB file declaring 3 GB is refused as truncated before anything is allocated), and it is
decompressed as a stream into a buffer of exactly the declared size (one byte more is read
only to detect a longer body), so neither a lying header nor a gzip bomb can make the reader
allocate more than the header declares. No dataset may take more than ``max_data_bytes()``
(4 GiB, or ``$VAEKIT_MAX_DATA_BYTES``) in memory once loaded, counted by
:func:`memory_per_value` (4 bytes per value at least: the float32 copy a model input is).
Files are opened by :func:`vaekit.io.open_regular` (regular files only: a FIFO or device
is refused, never read).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaekit.errors import DataError
from vaekit.io import human_bytes, open_regular, short_reason, shown

__all__ = ["IDX_TYPES", "MAX_BYTES_ENV", "MAX_NDIM", "check_values", "format_bytes",
           "max_data_bytes", "memory_per_value", "open_data_file", "read_idx", "read_into",
           "shape_text", "short_reason", "write_idx"]

# IDX type code -> numpy dtype (big-endian where multi-byte)
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

MAX_BYTES_ENV = "VAEKIT_MAX_DATA_BYTES"
DEFAULT_MAX_DATA_BYTES = 4 * 2**30
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def max_data_bytes() -> int:
    """The most memory (bytes) a dataset may take once loaded, counted by
    :func:`memory_per_value`: ``$VAEKIT_MAX_DATA_BYTES`` (a byte count, optionally with a
    K/M/G/T suffix, powers of 1024), else 4 GiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_DATA_BYTES
    number, unit = raw.rstrip("BbIi"), ""
    if number and number[-1].upper() in "KMGT":
        number, unit = number[:-1], number[-1].upper()
    try:
        value = int(float(number) * _UNITS[unit])
    except (ValueError, OverflowError):
        value = 0
    if value <= 0:
        raise DataError(f"{MAX_BYTES_ENV}={raw!r} is not a positive byte count",
                        f"set e.g. {MAX_BYTES_ENV}=8G, or unset it for the 4 GiB default")
    return value


format_bytes = human_bytes  # ``format_bytes(3 * 2**30)`` -> ``'3.0 GiB'``
MAX_NDIM = 32  # numpy holds at most 64 dimensions; no dataset has more than a few


def memory_per_value(dtype: np.dtype) -> int:
    """Bytes one stored value of ``dtype`` takes in memory once loaded: 4 (the float32 copy
    that model inputs are), 8 for integers other than uint8 (read as int64 levels), or the
    stored size where that is larger (float64 before its conversion)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and dtype != np.uint8:
        return 8
    return max(4, dtype.itemsize)


def check_values(count: int, dtype: np.dtype, what: str) -> None:
    """Refuse ``count`` values of ``dtype`` (declared, not yet allocated) whose loaded size
    (:func:`memory_per_value`) exceeds the memory limit."""
    need, limit = count * memory_per_value(dtype), max_data_bytes()
    if need > limit:
        raise DataError(f"{what}: {_count_text(count)} values of {np.dtype(dtype).name}, "
                        f"{format_bytes(need)} in memory as model inputs, more than the limit "
                        f"of {format_bytes(limit)}",
                        f"check the file; if it is right, raise the limit with {MAX_BYTES_ENV}")


def _count_text(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape for a one-line message: ``(60000, 28, 28)``, or its first sizes and its
    number of dimensions if it has many."""
    if len(shape) <= 6:
        return str(tuple(shape))
    return f"({', '.join(map(str, shape[:4]))}, ... {len(shape)} dimensions)"


def open_data_file(path: Path, what: str = "data file", limit: int | None = None) -> BinaryIO:
    """Open ``path`` for binary reading (:func:`vaekit.io.open_regular`): one DataError
    line if it is missing, a folder, a pipe or device (reading those could block or never
    end), unreadable, or larger than ``limit`` bytes."""
    return open_regular(path, what, limit=limit, error=DataError,
                        too_big=f"check the file; if it is right, raise the limit with "
                                f"{MAX_BYTES_ENV}")


_CHUNK = 2**20


def read_into(f: BinaryIO, buf: np.ndarray) -> int:
    """Fill the bytes of the contiguous array ``buf`` from ``f``; return how many were read."""
    view, done = memoryview(buf.reshape(-1).view(np.uint8)), 0
    while done < len(view):  # in chunks: a stream's readinto may build a temporary copy
        n = f.readinto(view[done : done + _CHUNK])
        if not n:
            break
        done += n
    return done


_DEFLATE_RATIO = 1032  # the most bytes deflate can encode in one compressed byte


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array, checking magic, sizes and length
    before allocating anything."""
    path = Path(path)
    with open_data_file(path, "IDX file", limit=max_data_bytes()) as raw:
        on_disk = os.fstat(raw.fileno()).st_size
        if raw.read(2) != _GZIP_MAGIC:
            raw.seek(0)
            return _read_idx_stream(raw, path, on_disk, exact=True)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_idx_stream(f, path, _DEFLATE_RATIO * on_disk + 2**10, exact=False)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"IDX file {shown(path)} is a corrupt or truncated gzip file "
                            f"({short_reason(err)})", "download or copy the file again") from None


def _read_idx_header(f: BinaryIO, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an IDX header; one DataError line for a malformed one."""
    corrupt = "the file is corrupt; copy it again"
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(f"{shown(path)} is not an IDX file (bad magic number)",
                        "pass an IDX file such as train-images-idx3-ubyte.gz")
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_TYPES:
        raise DataError(f"{shown(path)} has unknown IDX type code 0x{type_code:02x}", corrupt)
    if ndim > MAX_NDIM:
        raise DataError(f"IDX file {shown(path)} declares {ndim} dimensions; vaekit reads at "
                        f"most {MAX_NDIM}", corrupt)
    dims = f.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise DataError(f"{shown(path)} has a truncated IDX header", corrupt)
    return struct.unpack(f">{ndim}I", dims), IDX_TYPES[type_code]


def _read_idx_stream(f: BinaryIO, path: Path, size: int, exact: bool) -> np.ndarray:
    """The IDX layout from a stream of ``size`` bytes (``exact``: a raw file), or of at
    most ``size`` bytes (a gzip file's capacity)."""
    shape, dtype = _read_idx_header(f, path)
    header = 4 + 4 * len(shape)
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if exact and size - header != expected:
        _wrong_length(path, shape, expected, size - header)
    if expected == 0:
        raise DataError(f"IDX file {shown(path)} holds no values (dimensions "
                        f"{shape_text(shape)})", "the file is corrupt; copy it again")
    if not exact and header + expected > size:
        raise DataError(f"{shown(path)} is truncated: its header {shape_text(shape)} declares "
                        f"{format_bytes(expected)}, more than a gzip file of its size can hold",
                        "the file is corrupt; copy it again")
    check_values(math.prod(shape), dtype, f"IDX file {shown(path)} (dimensions "
                 f"{shape_text(shape)})")
    body = np.empty(expected, np.uint8)
    found = read_into(f, body)
    if found < expected:
        _wrong_length(path, shape, expected, found)
    if not exact and f.read(1):
        _wrong_length(path, shape, expected, None)
    arr = body.view(dtype).reshape(shape)
    if not dtype.isnative:
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr


def _wrong_length(path: Path, shape: tuple[int, ...], expected: int, found: int | None) -> None:
    what = "truncated" if found is not None and found < expected else "longer than its header says"
    got = "more" if found is None else format_bytes(max(found, 0))
    raise DataError(f"{shown(path)} is {what}: header {shape_text(shape)} needs "
                    f"{format_bytes(expected)}, found {got}", "the file is corrupt; copy it again")


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when the name ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: c for c, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"dtype {array.dtype} cannot be stored in IDX",
                        "convert to uint8, int8, int16, int32, float32 or float64")
    if not 0 < array.ndim < 256 or max(array.shape) >= 2**32:
        raise DataError(f"shape {array.shape} cannot be stored in IDX",
                        "IDX holds 1 to 255 dimensions of fewer than 2**32 entries each")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    big = array.astype(IDX_TYPES[codes[native]], copy=False)
    payload = header + big.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
