"""A validating reader and writer for the IDX format (MNIST, Fashion-MNIST).

Layout: magic = two zero bytes, a type code, the number of dimensions n; then n big-endian
uint32 sizes; then prod(sizes) values, big-endian. gzip is detected by content, not name.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

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


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist",
                        "check the path or run `vaekit data list`")
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"IDX file {path} is a corrupt or truncated gzip file ({err})",
                        "download or copy the file again") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array, checking magic, sizes and length."""
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)",
                        "pass an IDX file such as train-images-idx3-ubyte.gz")
    type_code, ndim = buf[2], buf[3]
    if type_code not in IDX_TYPES:
        raise DataError(f"{path} has unknown IDX type code 0x{type_code:02x}",
                        "the file is corrupt; copy it again")
    if ndim == 0 or len(buf) < 4 + 4 * ndim:
        raise DataError(f"{path} has a truncated IDX header", "the file is corrupt; copy it again")
    shape = struct.unpack(f">{ndim}I", buf[4 : 4 + 4 * ndim])
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(buf) - 4 - 4 * ndim
    if body != expected:
        what = "truncated" if body < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: header {tuple(shape)} needs {expected} bytes, "
                        f"found {body}", "the file is corrupt; copy it again")
    arr = np.frombuffer(buf, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when the name ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: c for c, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"dtype {array.dtype} cannot be stored in IDX",
                        "convert to uint8, int8, int16, int32, float32 or float64")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    big = array.astype(IDX_TYPES[codes[native]], copy=False)
    payload = header + big.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
