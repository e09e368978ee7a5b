"""A validating reader and writer for the IDX format (MNIST, Fashion-MNIST), and the memory
limit that every data reader checks before it allocates.

Layout: magic = two zero bytes, a type code, the number of dimensions n; then n big-endian
uint32 sizes; then prod(sizes) values, big-endian. gzip is detected by content, not name.

Bounded memory: the header says how many bytes the body must have. A raw file's size must
match it and a gzip file is decompressed as a stream into a buffer of exactly that size (one
byte more is read only to detect a longer body), so neither a lying header nor a gzip bomb
can make the reader allocate more than the header declares; and no declared array may exceed
``max_data_bytes()`` (4 GiB, or ``$VAEKIT_MAX_DATA_BYTES``).
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaekit.errors import DataError

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
    """The largest array (in bytes) a reader may allocate: ``$VAEKIT_MAX_DATA_BYTES``
    (a byte count, optionally with a K/M/G/T suffix, powers of 1024), else 4 GiB."""
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


def format_bytes(n: int) -> str:
    """``format_bytes(3 * 2**30)`` -> ``'3.0 GiB'``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_nbytes(nbytes: int, what: str) -> None:
    """Refuse an array of ``nbytes`` (declared, not yet allocated) above the memory limit."""
    limit = max_data_bytes()
    if nbytes > limit:
        raise DataError(f"{what} declares {format_bytes(nbytes)} of data, more than the limit "
                        f"of {format_bytes(limit)}",
                        f"check the file; if it is right, raise the limit with {MAX_BYTES_ENV}")


def open_data_file(path: Path, what: str = "data file") -> BinaryIO:
    """Open ``path`` for binary reading; one clear DataError if it is missing, a folder, a
    pipe or device (reading those could block or never end) or unreadable."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist",
                        "check the path or run `vaekit data list`") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {short_reason(err)}",
                        "check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path} is a folder where a file is expected",
                        "pass the file itself, or the folder alone as --data")
    if not stat.S_ISREG(mode):
        raise DataError(f"{path} is not a regular file (a pipe, socket or device)",
                        "copy the data into a regular file first")
    try:
        return open(path, "rb")
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied",
                        "make it readable (chmod u+r) or copy it somewhere readable") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {short_reason(err)}",
                        "check the file and its permissions") from None


def short_reason(err: BaseException, limit: int = 160) -> str:
    """An exception as one short line (library messages may span lines or quote bytes)."""
    args = err.args
    text = getattr(err, "strerror", None) or (
        args[0] if len(args) > 1 and isinstance(args[0], str) else str(err))  # e.g. TokenError
    text = " ".join(str(text).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array, checking magic, sizes and length
    before allocating anything."""
    path = Path(path)
    with open_data_file(path, "IDX file") as raw:
        if raw.read(2) != _GZIP_MAGIC:
            raw.seek(0)
            return _read_idx_stream(raw, path, os.fstat(raw.fileno()).st_size)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_idx_stream(f, path, None)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"IDX file {path} is a corrupt or truncated gzip file "
                            f"({short_reason(err)})", "download or copy the file again") from None


def _read_idx_stream(f: BinaryIO, path: Path, size: int | None) -> np.ndarray:
    """The IDX layout from a stream; ``size``: the stream's length when known (raw files)."""
    corrupt = "the file is corrupt; copy it again"
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)",
                        "pass an IDX file such as train-images-idx3-ubyte.gz")
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_TYPES:
        raise DataError(f"{path} has unknown IDX type code 0x{type_code:02x}", corrupt)
    dims = f.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise DataError(f"{path} has a truncated IDX header", corrupt)
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if size is not None and size - 4 - 4 * ndim != expected:
        _wrong_length(path, shape, expected, size - 4 - 4 * ndim)
    if expected == 0:
        raise DataError(f"IDX file {path} holds no values (dimensions {tuple(shape)})", corrupt)
    check_nbytes(expected, f"IDX file {path} (dimensions {tuple(shape)})")
    body = np.empty(expected, np.uint8)
    found = read_into(f, body)
    if found < expected:
        _wrong_length(path, shape, expected, found)
    if size is None and f.read(1):
        _wrong_length(path, shape, expected, None)
    arr = body.view(dtype).reshape(shape)
    if not dtype.isnative:
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr


def _wrong_length(path: Path, shape: tuple[int, ...], expected: int, found: int | None) -> None:
    what = "truncated" if found is not None and found < expected else "longer than its header says"
    got = "more" if found is None else str(found)
    raise DataError(f"{path} is {what}: header {tuple(shape)} needs {expected} bytes, found {got}",
                    "the file is corrupt; copy it again")


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
