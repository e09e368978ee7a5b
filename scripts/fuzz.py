"""Fuzz vaekit's data readers: every malformed input must end in vaekit's own DataError (or
load as valid data), never in another exception, a hang or a memory blow-up.

    .venv/bin/python scripts/fuzz.py --n 2000 [--seed 0] [--cap-mb 512] [--limit-mb 8]
    .venv/bin/python scripts/fuzz.py --runs 3000 --jobs 2   # run directories, outputs, flags

Inputs are mutations of small valid IDX (raw and gzip), NPY, NPZ files, IDX and NPY folders
and PNG/JPEG image folders: truncation, bit flips, overwritten/inserted/deleted bytes, IDX
dimensions and type codes edited (huge, zero), gzip bombs (a small header over a body that
inflates to 1 GiB), .npy headers edited (huge or negative shapes, object/string/wide dtypes,
Fortran order, format version), .npz members pickled, renamed, recompressed or given false
sizes, random garbage. Issue 21 added: IDX headers of up to 255 dimensions (raw, and gzip
files far smaller than their header declares), npy/npz members longer than their header
declares, PNG folders with edited headers (sizes up to 2**32-1, every bit depth and colour
type), 16-bit PNGs, EXIF orientations (before or after the pixels, or garbage), a 140 KB
12000x12000 PNG bomb; every data file replaced by a FIFO, a socket, a folder, a link to
/dev/zero, to a FIFO, to a valid file, a dangling or looping link, or a 5 GiB sparse file;
dataset specs (``ring:n=...``) with unknown, repeated, non-numeric, negative, zero or huge
options; JSON run files (deep nesting, invalid UTF-8, huge numbers) read by
``vaekit.io.read_json``/``read_jsonl``. ``--only idx,pngdir,...`` restricts the seed kinds.

Each input goes to ``load_dataset(path)`` and, for a single file, to its reader
(``read_idx`` / ``read_npy`` / ``read_json``), in a worker process whose address space is
capped (``RLIMIT_AS``: its size after start-up plus ``--cap-mb``) with
``VAEKIT_MAX_DATA_BYTES`` = ``--limit-mb``: an allocation beyond the cap is a memory-cap hit.
A DataError whose message is not one short line counts as a bad line. ``--cli K`` then runs
up to K of the refused inputs through the real CLI (``vaekit train --data ...`` in a child
process): each must print exactly one ``error:`` line, exit 2, print no traceback and change
no file. Prints the counts (inputs, valid, DataError, other exceptions = internal errors,
bad lines, memory-cap hits, hangs, then per seed kind) and the worker's peak RSS; exits 1 if
anything other than valid/DataError happened. ``tests/test_fuzz.py`` runs the same harness
under hypothesis.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------ valid seeds


def _idx_payload(a: np.ndarray) -> bytes:
    code = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}[a.dtype.str[1:]]
    big = a.astype(a.dtype.newbyteorder(">"))
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + big.tobytes()


def _npy(a: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, a, allow_pickle=a.dtype.hasobject)
    else:
        np.lib.format.write_array(buf, a, version=version, allow_pickle=a.dtype.hasobject)
    return buf.getvalue()


def _image(a: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class Seed:
    """A valid input: ``kind`` (idx, npy, npz, idxdir, npydir, imgdir, pngdir, json, spec),
    its files, which file the mutations hit, and for IDX whether it is gzipped / for NPZ the
    members / for a dataset spec (kind ``spec``: no files) the spec."""

    name: str
    kind: str
    files: dict[str, bytes]
    target: str
    gz: bool = False
    members: dict[str, bytes] = field(default_factory=dict)
    spec: str = ""


def seeds() -> list[Seed]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    lab = rng.integers(0, 3, 6, dtype=np.uint8)
    f32 = rng.normal(size=(8, 3)).astype(np.float32)
    out = [
        Seed("idx-u8", "idx", {"data.idx": _idx_payload(img)}, "data.idx"),
        Seed("idx-u8-gz", "idx", {"data.idx.gz": _idx_payload(img)}, "data.idx.gz", gz=True),
        Seed("idx-i2", "idx", {"data.idx": _idx_payload(img.astype(np.int16))}, "data.idx"),
        Seed("idx-f4", "idx", {"data.idx": _idx_payload(f32)}, "data.idx"),
        Seed("idx-f8-gz", "idx", {"d.idx.gz": _idx_payload(f32.astype(np.float64))},
             "d.idx.gz", gz=True),
        Seed("npy-u8", "npy", {"x.npy": _npy(img)}, "x.npy"),
        Seed("npy-f4", "npy", {"x.npy": _npy(f32)}, "x.npy"),
        Seed("npy-f8-fortran", "npy", {"x.npy": _npy(np.asfortranarray(f32.astype(float)))},
             "x.npy"),
        Seed("npy-i4-big-endian", "npy", {"x.npy": _npy(img.astype(">i4"))}, "x.npy"),
        Seed("npy-u2-v2", "npy", {"x.npy": _npy(img.astype(np.uint16), (2, 0))}, "x.npy"),
        Seed("npz-train-test", "npz", {}, "d.npz",
             members={"train.npy": _npy(img), "test.npy": _npy(img[:2]),
                      "train_labels.npy": _npy(lab), "test_labels.npy": _npy(lab[:2])}),
        Seed("npz-x-y", "npz", {}, "d.npz",
             members={"x.npy": _npy(f32), "y.npy": _npy(lab[:1].repeat(8)),
                      "unused.npy": _npy(np.zeros(3))}),
        Seed("npz-x_train", "npz", {}, "d.npz",
             members={"x_train.npy": _npy(img), "x_test.npy": _npy(img[:3])}),
        Seed("npz-single", "npz", {}, "d.npz", members={"data.npy": _npy(f32)}),
    ]
    idx_dir = {"train-images-idx3-ubyte": _idx_payload(img),
               "t10k-images-idx3-ubyte": _idx_payload(img[:2]),
               "train-labels-idx1-ubyte": _idx_payload(lab),
               "t10k-labels-idx1-ubyte": _idx_payload(lab[:2])}
    for target in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        out.append(Seed(f"idxdir-{target[:11]}", "idxdir", dict(idx_dir), target))
    npy_dir = {"train.npy": _npy(f32), "test.npy": _npy(f32[:3]),
               "train_labels.npy": _npy(lab[:1].repeat(8)), "test_labels.npy": _npy(lab[:3])}
    for target in ("train.npy", "train_labels.npy"):
        out.append(Seed(f"npydir-{target}", "npydir", dict(npy_dir), target))
    for fmt, ext, mode in (("PNG", "png", "RGB"), ("JPEG", "jpg", "L"), ("PNG", "png", "RGBA")):
        ch = {"RGB": 3, "L": 0, "RGBA": 4}[mode]
        shape = (5, 4, ch) if ch else (5, 4)
        files = {f"{i}.{ext}": _image(rng.integers(0, 256, shape, dtype=np.uint8), fmt)
                 for i in range(4)}
        out.append(Seed(f"imgdir-{ext}-{mode}", "imgdir", files, f"2.{ext}"))
    return out + issue21_seeds()


def png_bytes(w: int, h: int, depth: int = 8, color: int = 0, fill: int = 0) -> bytes:
    """A PNG of ``fill`` bytes written chunk by chunk (12000x12000 in about a second and
    little memory); ``color``: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    row = b"\0" + bytes([fill]) * ((w * channels * depth + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))]
    if color == 3:
        chunks.append((b"PLTE", bytes(range(0, 255, 1))[:3 * 85]))
    return _png_join([*chunks, (b"IDAT", idat), (b"IEND", b"")])


def _png_join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return _PNG_SIG + b"".join(struct.pack(">I", len(data)) + kind + data
                               + struct.pack(">I", zlib.crc32(kind + data))
                               for kind, data in chunks)


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def issue21_seeds() -> list[Seed]:
    """PNG folders (grey, RGB, palette), JSON run files and dataset specs."""
    rng = np.random.default_rng(1)
    out = []
    for color, name in ((0, "L"), (2, "RGB"), (3, "P")):
        files = {f"{i}.png": png_bytes(5, 4, 8, color, int(rng.integers(256)))
                 for i in range(4)}
        out.append(Seed(f"pngdir-{name}", "pngdir", files, "1.png"))
    trainer = {"epoch": 3, "step": 15, "history": [{"epoch": 1, "loss": 1.5}], "rng": [1, 2]}
    out.append(Seed("json-trainer", "json", {"trainer.json": json.dumps(trainer).encode()},
                    "trainer.json"))
    lines = "".join(json.dumps({"epoch": i, "elbo": -1.0 * i}) + "\n" for i in range(3))
    out.append(Seed("jsonl-metrics", "json", {"metrics.jsonl": lines.encode()},
                    "metrics.jsonl"))
    for spec in ("ring:n=50", "manifold:r=2,d=4,n=40", "digits", "ring:n=30,noise=0.1"):
        out.append(Seed(f"spec-{spec.split(':')[0]}", "spec", {}, "", spec=spec))
    return out


# -------------------------------------------------------------------- mutations

HUGE = [0, 1, 2, 3, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1]


def truncate(d: bytes, a: int, b: int) -> bytes:
    return d[: a % (len(d) + 1)]


def flip_bits(d: bytes, a: int, b: int) -> bytes:
    if not d:
        return d
    out = bytearray(d)
    r = random.Random(a)
    for _ in range(1 + b % 8):
        out[r.randrange(len(out))] ^= 1 << r.randrange(8)
    return bytes(out)


def set_bytes(d: bytes, a: int, b: int) -> bytes:
    if not d:
        return d
    i = a % len(d)
    value = (b % 256 if b % 3 else 0xFF).to_bytes(1, "big") * (1 + (b >> 8) % 4)
    return d[:i] + value + d[i + len(value):]


def insert_garbage(d: bytes, a: int, b: int) -> bytes:
    i = a % (len(d) + 1)
    return d[:i] + random.Random(b).randbytes(1 + b % 64) + d[i:]


def delete_range(d: bytes, a: int, b: int) -> bytes:
    i = a % (len(d) + 1)
    return d[:i] + d[i + 1 + b % 32:]


def garbage(d: bytes, a: int, b: int) -> bytes:
    return random.Random(a).randbytes(b % 300)


GENERIC = [truncate, flip_bits, set_bytes, insert_garbage, delete_range, garbage]


def idx_dims(d: bytes, a: int, b: int) -> bytes:
    if len(d) < 8:
        return d
    i = a % max(d[3], 1)
    value = HUGE[b % len(HUGE)] if b % 4 else b % 2**32
    return d[: 4 + 4 * i] + struct.pack(">I", value) + d[8 + 4 * i:]


def idx_ndim_type(d: bytes, a: int, b: int) -> bytes:
    if len(d) < 4:
        return d
    pos = 2 + a % 2
    values = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF] if pos == 2 else [0, 1, 2, 3, 4, 255]
    return d[:pos] + bytes([values[b % len(values)]]) + d[pos + 1:]


IDX = [idx_dims, idx_dims, idx_ndim_type]

_HEADER = re.compile(rb"\{.*\}", re.S)
SHAPES = ["(2147483647, 0)", "(1000000000000,)", "(4611686018427387904, 4611686018427387904)",
          "(-1, 5)", "()", "(0,)", "(5, 0)", "(1, 3)", "(1099511627776, 28, 28)", "(3,)",
          "(2, 2, 2, 2, 2, 2, 2, 2)", "(6, 4, 3, 1)", "(6, 4, 4, 3)", "[6, 4]", "(6.0, 4)",
          "(True, 3)"]
DESCRS = ["'|O'", "'<U5'", "'|S3'", "'<u8'", "'>u8'", "'<u2'", "'<u4'", "'>f8'", "'<f2'",
          "'|V8'", "'<c16'", "'|b1'", "'<M8[s]'", "[('a', '<f4')]", "('<f4', (3,))",
          "'garbage'", "'<i8'", "'|u1'", "'<f16'", "'<f8'", "7", "None"]


def _with_header(d: bytes, edit: Callable[[bytes], bytes], fix_length: bool) -> bytes:
    m = _HEADER.search(d[:4096])
    if not d.startswith(b"\x93NUMPY") or m is None:
        return d
    new = edit(m.group(0))
    out = d[: m.start()] + new + d[m.end():]
    if fix_length and d[6] == 1:  # keep the version 1.0 header length field consistent
        hlen = struct.unpack("<H", d[8:10])[0] + len(new) - len(m.group(0))
        out = out[:8] + struct.pack("<H", hlen % 2**16) + out[10:]
    elif fix_length and d[6] >= 2:
        hlen = struct.unpack("<I", d[8:12])[0] + len(new) - len(m.group(0))
        out = out[:8] + struct.pack("<I", hlen % 2**32) + out[12:]
    return out


def npy_shape(d: bytes, a: int, b: int) -> bytes:
    shape = SHAPES[a % len(SHAPES)].encode()
    return _with_header(d, lambda h: re.sub(rb"'shape': [^}]*?\)", b"'shape': " + shape, h),
                        b % 4 != 0)


def npy_descr(d: bytes, a: int, b: int) -> bytes:
    descr = DESCRS[a % len(DESCRS)].encode()
    return _with_header(d, lambda h: re.sub(rb"'descr': '[^']*'", b"'descr': " + descr, h),
                        b % 4 != 0)


def npy_fortran(d: bytes, a: int, b: int) -> bytes:
    return _with_header(d, lambda h: h.replace(b"False", b"True") if b"False" in h
                        else h.replace(b"True", b"False"), True)


def npy_version(d: bytes, a: int, b: int) -> bytes:
    return d[:6] + bytes([a % 5, b % 3]) + d[8:] if len(d) >= 8 else d


NPY = [npy_shape, npy_shape, npy_descr, npy_descr, npy_fortran, npy_version]


def zip_sizes(z: bytes, a: int, b: int) -> bytes:
    """Declare another uncompressed size for a member in the central directory and the
    local header."""
    value = HUGE[b % len(HUGE)] if b % 3 else b % 2**32
    out = bytearray(z)
    for sig, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        hits = [m.start() for m in re.finditer(re.escape(sig), z)]
        if hits:
            i = hits[a % len(hits)] + offset
            out[i: i + 4] = struct.pack("<I", value)
    return bytes(out)


GENERIC_ZIP = [truncate, flip_bits, set_bytes, insert_garbage, zip_sizes, zip_sizes]


def member_extra(members: dict[str, bytes], a: int, b: int) -> dict[str, bytes]:
    """Add, rename or replace members: pickled objects, non-npy bytes, strings."""
    out, names = dict(members), sorted(members)
    name = names[a % len(names)] if names else "x.npy"
    choice = b % 5
    if choice == 0:
        out[name] = _npy(np.array([[1, "a"], [2, "b"]], dtype=object))
    elif choice == 1:
        out[name.removesuffix(".npy")] = out.pop(name, b"")  # not a .npy member any more
    elif choice == 2:
        out[name] = _npy(np.array([["ab", "cd"], ["ef", "gh"]]))
    elif choice == 3:
        out[f"extra{a % 3}.npy"] = random.Random(b).randbytes(b % 200)
    else:
        out.pop(name, None)
    return out


def gzip_bomb(payload: bytes, a: int, b: int) -> bytes:
    """Marker op: handled in build() (a body inflating to 1 GiB after a real header)."""
    return payload


# ------------------------------------------------------------ issue 21 mutations

NDIMS = [0, 1, 2, 3, 4, 32, 33, 64, 65, 200, 255]


def idx_header(d: bytes, a: int, b: int) -> bytes:
    """A new header of 0..255 dimensions (huge or small sizes) over the same body: for a gzip
    seed, a small file declaring gigabytes."""
    if len(d) < 4:
        return d
    ndim = NDIMS[a % len(NDIMS)]
    dims = [HUGE[(b >> (i % 24)) % len(HUGE)] if (a >> i) & 1 else (b >> i) % 7 + 1
            for i in range(ndim)]
    old = 4 + 4 * d[3]
    return d[:2] + bytes([d[2], ndim]) + struct.pack(f">{ndim}I", *dims) + d[old:]


def npy_trailing(d: bytes, a: int, b: int) -> bytes:
    """Bytes after the array: a file or npz member longer than its header declares."""
    return d + random.Random(a).randbytes(1 + b % 100)


def _png_chunks(d: bytes) -> list[tuple[bytes, bytes]] | None:
    if not d.startswith(_PNG_SIG):
        return None
    out, i = [], len(_PNG_SIG)
    while i + 8 <= len(d):
        n = struct.unpack(">I", d[i:i + 4])[0]
        out.append((d[i + 4:i + 8], d[i + 8:i + 8 + n]))
        i += 12 + n
    return out if out and out[0][0] == b"IHDR" and len(out[0][1]) == 13 else None


def png_ihdr(d: bytes, a: int, b: int) -> bytes:
    """Edit the width, height, bit depth or colour type (CRC kept valid)."""
    chunks = _png_chunks(d)
    if chunks is None:
        return d
    w, h, depth, color, *rest = struct.unpack(">IIBBBBB", chunks[0][1])
    field_ = a % 4
    if field_ == 0:
        w = HUGE[b % len(HUGE)] if b % 3 else b % 64
    elif field_ == 1:
        h = HUGE[b % len(HUGE)] if b % 3 else b % 64
    elif field_ == 2:
        depth = (1, 2, 4, 8, 16, 0, 3, 255)[b % 8]
    else:
        color = (0, 2, 3, 4, 6, 1, 5, 7)[b % 8]
    chunks[0] = (b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, *rest))
    return _png_join(chunks)


def _exif(orientation: int) -> bytes:
    from PIL import Image

    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def png_exif(d: bytes, a: int, b: int) -> bytes:
    """An eXIf chunk (orientation 0..9, or garbage) before or after the pixels."""
    chunks = _png_chunks(d)
    if chunks is None:
        return d
    blob = _exif(a % 10) if b % 4 else random.Random(a).randbytes(b % 64)
    at = next((i for i, c in enumerate(chunks) if c[0] == b"IDAT"), 1)
    chunks.insert(at + (1 if b % 2 else 0), (b"eXIf", blob))
    return _png_join(chunks)


def png_depth16(d: bytes, a: int, b: int) -> bytes:
    """A valid 16-bit PNG (grey, RGB, grey+alpha or RGBA) of the same size."""
    chunks = _png_chunks(d)
    if chunks is None:
        return d
    w, h = struct.unpack(">II", chunks[0][1][:8])
    return png_bytes(min(w, 64), min(h, 64), 16, (0, 2, 4, 6)[a % 4], b % 256)


_BIG_PNG: bytes | None = None


def png_bomb(d: bytes, a: int, b: int) -> bytes:
    """A 12000x12000 grey PNG of zeros: ~140 KB, 144 M pixels (576 MB as float32)."""
    global _BIG_PNG
    if _BIG_PNG is None:
        _BIG_PNG = png_bytes(12000, 12000)
    return _BIG_PNG


PNG = [png_ihdr, png_ihdr, png_exif, png_exif, png_depth16, png_bomb]


def json_edit(d: bytes, a: int, b: int) -> bytes:
    """Deep nesting, invalid UTF-8, a byte-order mark, huge or odd numbers, wrong types."""
    depth = (10, 63, 64, 65, 1000, 100000)[a % 6]
    choices = [b"[" * depth + b"]" * depth, b'{"epoch": "\xff\xfe"}', b"\xef\xbb\xbf" + d,
               b'{"epoch": ' + b"9" * (1000 + b % 5000) + b"}", b'{"epoch": 1e999}',
               b'{"epoch": NaN}', b"null", b'"' + b"x" * (b % 1000) + b'"',
               d.replace(b"3", b'{"a": ' * depth + b"1" + b"}" * depth, 1)]
    return choices[b % len(choices)]


SPEC_NAMES = ["ring", "manifold", "digits", "fashion-mnist", "mnist", "ringg", "", "RING",
              "ring ", "digits/"]
SPEC_KEYS = ["n", "noise", "r", "d", "bad", "", "n ", "N", "limit"]
SPEC_VALUES = ["0", "1", "-1", "2.5", "1e3", "1e30", "1e400", "nan", "inf", "-inf", "", "abc",
               "9" * 400, "0x10", "1_000", "1e-300", "-0", "2147483648", "3", "100"]


def spec_edit(d: bytes, a: int, b: int) -> bytes:
    """Change a dataset spec's name, add an option, or set one to an odd value."""
    name, colon, rest = d.decode("latin-1").partition(":")
    items = [i for i in rest.split(",") if i]
    choice = b % 3
    if choice == 0:
        name = SPEC_NAMES[a % len(SPEC_NAMES)]
    elif choice == 1 or not items:
        items.append(f"{SPEC_KEYS[a % len(SPEC_KEYS)]}={SPEC_VALUES[b % len(SPEC_VALUES)]}")
    else:
        i = a % len(items)
        items[i] = f"{items[i].partition('=')[0]}={SPEC_VALUES[(a >> 8) % len(SPEC_VALUES)]}"
    return (name + (":" + ",".join(items) if items or colon else "")).encode("latin-1")


SPEC = [spec_edit, spec_edit, spec_edit, flip_bits, truncate, insert_garbage]
SPECIALS = ["fifo", "socket", "dir", "devzero", "dangling", "loop", "link", "fifo-link",
            "sparse"]


def special_file(d: bytes, a: int, b: int) -> bytes:
    """Marker op: handled in build() (the target becomes a FIFO, socket, link, ...)."""
    return d


@dataclass(frozen=True)
class Special:
    """A file that is not plain bytes: see ``SPECIALS``; ``blob`` for a link to a valid
    file (written beside it as a hidden file)."""

    kind: str
    blob: bytes = b""


def make_file(path: Path, content: bytes | Special, sockets: list[socket.socket]) -> None:
    """Write ``content`` at ``path``: bytes, or a special file."""
    if isinstance(content, bytes):
        path.write_bytes(content)
        return
    kind, hidden = content.kind, path.with_name(f".orig-{path.name}")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sockets.append(sock)
    elif kind == "dir":
        path.mkdir()
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    elif kind == "dangling":
        path.symlink_to(path.with_name("nowhere"))
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "link":
        hidden.write_bytes(content.blob)
        path.symlink_to(hidden.name)
    elif kind == "fifo-link":
        os.mkfifo(hidden)
        path.symlink_to(hidden.name)
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(5 * 2**30)


# -------------------------------------------------------------------- building


OP_TABLE: dict[str, list[Callable]] = {
    "idx": [*GENERIC, *IDX, gzip_bomb, idx_header, idx_header, special_file],
    "npy": [*GENERIC, *NPY, npy_trailing, special_file],
    "npz": [*GENERIC, *NPY, *GENERIC_ZIP, member_extra, member_extra, npy_trailing,
            special_file],
    "idxdir": [*GENERIC, *IDX, idx_header, special_file],
    "npydir": [*GENERIC, *NPY, npy_trailing, special_file],
    "imgdir": [*GENERIC, special_file],
    "pngdir": [*GENERIC, *PNG, png_exif, special_file],
    "json": [*GENERIC, json_edit, json_edit, json_edit, special_file],
    "spec": SPEC,
}


@dataclass
class Input:
    kind: str
    files: dict[str, bytes | Special]  # name -> content, written into one folder
    target: str  # the path given to load_dataset: a file name, or "" for the folder
    reader: str | None  # "idx" / "npy" / "json" / "jsonl": also call that reader on it
    spec: str = ""  # kind "spec": the dataset spec given to load_dataset instead of a path


_ZERO_MEMBER: bytes | None = None


def _bomb(header: bytes, declared: int) -> bytes:
    """gzip: an IDX header declaring ``declared`` values, then 1 GiB of zeros (1,024
    gzip members of 1 MiB each: ~1 MB on disk)."""
    global _ZERO_MEMBER
    if _ZERO_MEMBER is None:
        _ZERO_MEMBER = gzip.compress(bytes(2**20), compresslevel=9)
    dims = (declared, 1) if declared < 2**32 else (declared // 1024, 1024)
    hdr = bytes([0, 0, 0x08, 2]) + struct.pack(">2I", *dims)
    return gzip.compress(hdr) + _ZERO_MEMBER * 1024


def build(seed: Seed, ops: list[tuple[int, int, int]]) -> Input:
    """Apply ``ops`` ((op code, a, b), ...) to ``seed``: the same list always gives the same
    input (hypothesis shrinks these lists)."""
    table = OP_TABLE[seed.kind]
    members = dict(seed.members)
    data = seed.files.get(seed.target, b"")
    post: list[tuple[Callable, int, int]] = []
    bomb = special = None
    if seed.kind == "spec":
        data = seed.spec.encode("latin-1")
    for code, a, b in ops:
        op = table[code % len(table)]
        if op is special_file:
            special = SPECIALS[a % len(SPECIALS)]
        elif seed.kind == "npz":
            if op is member_extra:
                members = member_extra(members, a, b)
            elif (op in GENERIC_ZIP and op not in GENERIC) or (op in GENERIC and b % 2):
                post.append((op, a, b))  # on the zip file's bytes
            elif members:
                name = sorted(members)[a % len(members)]
                members[name] = op(members[name], a, b)
        elif op is gzip_bomb:
            bomb = (HUGE[a % len(HUGE)], 28 * 28 * 60000, 5 * 2**30, 2**30)[b % 4]
        elif seed.gz and b % 2:
            post.append((op, a, b))  # on the compressed bytes
        else:
            data = op(data, a, b)
    if seed.kind == "npz":
        methods = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) * 3 + (zipfile.ZIP_BZIP2,
                                                                     zipfile.ZIP_LZMA)
        method = methods[sum(o[2] for o in ops) % len(methods)]  # mostly as numpy writes
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, blob in members.items():
                zf.writestr(name, blob)
        data = buf.getvalue()
    elif bomb is not None:
        data = _bomb(data, bomb)
    elif seed.gz:
        data = gzip.compress(data, compresslevel=1, mtime=0)
    for op, a, b in post:
        data = op(data, a, b)
    if seed.kind == "spec":
        return Input("spec", {}, "", None, data.decode("latin-1"))
    files: dict[str, bytes | Special] = dict(seed.files)
    files[seed.target] = data if special is None else Special(special, data)
    single = seed.kind in ("idx", "npy", "npz", "json")
    reader = {"idx": "idx", "npy": "npy"}.get(seed.kind)
    if seed.kind == "json":
        reader = "jsonl" if seed.target.endswith(".jsonl") else "json"
    return Input(seed.kind, files, seed.target if single else "", reader)


def random_ops(rng: random.Random) -> list[tuple[int, int, int]]:
    return [(rng.randrange(64), rng.randrange(2**32), rng.randrange(2**32))
            for _ in range(1 + min(rng.randrange(6), rng.randrange(6)))]


# ----------------------------------------------------------------------- worker


def _vm_bytes() -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmSize:\s+(\d+) kB", text)
    return int(m.group(1)) * 1024 if m else None


def _classify(err: BaseException) -> str:
    from vaekit.errors import DataError

    if isinstance(err, DataError):
        return "dataerror"
    if isinstance(err, MemoryError) or "allocate" in str(err).lower():
        return "memory"
    return "other"


MAX_LINE = 600  # characters: a longer error is not "one clear line"


def _attempt(fn: Callable[[], object]) -> tuple[str, str]:
    try:
        fn()
    except Exception as err:
        outcome, text = _classify(err), str(err)
        if outcome == "dataerror" and ("\n" in text or len(text) > MAX_LINE):
            outcome = "badline"
        return outcome, f"{type(err).__name__}: {text[:300]}"
    return "valid", ""


def _readers() -> dict[str, Callable[[str], object]]:
    from vaekit.data.datasets import read_npy
    from vaekit.data.idx import read_idx
    from vaekit.errors import DataError
    from vaekit.io import read_json, read_jsonl

    return {"idx": read_idx, "npy": read_npy,
            "json": lambda p: read_json(p, 2**20, "run file", error=DataError),
            "jsonl": lambda p: read_jsonl(p, 2**20, "metrics file", error=DataError)}


def _answer(req: dict, readers: dict[str, Callable[[str], object]]) -> tuple[str, str]:
    """(outcome, detail) of one request: load_dataset, then the file's own reader (whose
    outcome counts for a JSON file, which is no dataset)."""
    from vaekit.data.datasets import load_dataset

    outcome, detail = _attempt(lambda: load_dataset(req.get("spec") or req["path"]))
    if req.get("reader") and outcome in ("valid", "dataerror"):
        r_out, r_detail = _attempt(lambda: readers[req["reader"]](req["path"]))
        if r_out not in ("valid", "dataerror") or req["reader"] in ("json", "jsonl"):
            outcome, detail = r_out, f"reader: {r_detail}" if r_detail else ""
    return outcome, detail


def worker(cap_mb: int) -> None:
    """Read JSON requests {"path", "reader"} line by line, answer {"outcome", "detail",
    "maxrss_kb"}; the address space is capped after start-up."""
    import resource
    import warnings

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    readers = _readers()
    with tempfile.TemporaryDirectory() as tmp:  # warm up every reader before the cap
        for seed in seeds():
            inp = build(seed, [])
            for name, blob in inp.files.items():
                Path(tmp, name).write_bytes(blob)
            _answer({"path": str(Path(tmp, inp.target)), "reader": inp.reader,
                     "spec": inp.spec}, readers)
            for name in inp.files:
                Path(tmp, name).unlink()
        png_bomb(b"", 0, 0)
    vm = _vm_bytes()
    if vm is not None:
        limit = vm + cap_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    print(json.dumps({"ready": True, "capped": vm is not None}), flush=True)
    for line in sys.stdin:
        outcome, detail = _answer(json.loads(line), readers)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"outcome": outcome, "detail": detail, "maxrss_kb": rss}), flush=True)


class Harness:
    """A capped worker process plus a scratch folder; ``run(input)`` -> (outcome, detail)."""

    def __init__(self, cap_mb: int = 512, limit_mb: int = 8, timeout_s: float = 30.0) -> None:
        self.cap_mb, self.limit_mb, self.timeout_s = cap_mb, limit_mb, timeout_s
        self.tmp = Path(tempfile.mkdtemp(prefix="vaekit-fuzz-"))
        self.proc: subprocess.Popen | None = None
        self.capped = False
        self.peak_rss_kb = 0
        self.baseline_rss_kb = 0
        self.count = 0

    def _start(self) -> None:
        env = {**os.environ, "VAEKIT_MAX_DATA_BYTES": f"{self.limit_mb}M",
               "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--cap-mb", str(self.cap_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env, cwd=self.tmp)
        ready = self._reply(120.0)
        if ready is None or not ready.get("ready"):
            raise RuntimeError("the fuzz worker did not start")
        self.capped = ready["capped"]

    def _reply(self, timeout: float) -> dict | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, inp: Input) -> tuple[str, str]:
        if self.proc is None:
            self._start()
        self.count += 1
        folder = self.tmp / f"case{self.count}"
        folder.mkdir()
        sockets: list[socket.socket] = []
        for name, content in inp.files.items():
            make_file(folder / name, content, sockets)
        path = folder / inp.target if inp.target else folder
        assert self.proc is not None and self.proc.stdin is not None
        req = {"path": str(path), "reader": inp.reader, "spec": inp.spec}
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            reply = self._reply(self.timeout_s)
        except BrokenPipeError:
            reply = None
        finally:
            for sock in sockets:
                sock.close()
            shutil.rmtree(folder, ignore_errors=True)
        if reply is None:
            code = self.proc.poll()
            self._stop()
            if code is None:
                return "hang", f"no answer within {self.timeout_s:.0f} s"
            return "memory" if code in (-9, -6) else "other", f"worker died (exit {code})"
        if not self.baseline_rss_kb:
            self.baseline_rss_kb = reply["maxrss_kb"]
        self.peak_rss_kb = max(self.peak_rss_kb, reply["maxrss_kb"])
        return reply["outcome"], reply["detail"]

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------- main


def _kind_of(detail: str) -> str:
    """A DataError message without paths, numbers and quoted values: its kind."""
    text = re.sub(r"(/[^\s:;,()\[\]]+)+", "PATH", detail.split(";")[0])
    text = re.sub(r"'[^']*'|\([^()]*\)|\d+", "_", text)
    return text[:90]


BAD = ("other", "badline", "memory", "hang")  # outcomes that are failures


def campaign(n: int, seed: int, cap_mb: int, limit_mb: int, show: int = 0,
             only: list[str] | None = None, cli: int = 0, cli_cap_mb: int = 3072) -> int:
    rng, corpus = random.Random(seed), [s for s in seeds() if not only or s.kind in only]
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    per_kind: dict[str, Counter[str]] = {}
    failures: list[str] = []
    refused: list[Input] = []
    harness = Harness(cap_mb, limit_mb)
    t0 = time.perf_counter()
    try:
        for i in range(n):
            s = corpus[i % len(corpus)] if i < len(corpus) else rng.choice(corpus)
            ops = [] if i < len(corpus) else random_ops(rng)
            inp = build(s, ops)
            outcome, detail = harness.run(inp)
            counts[outcome] += 1
            per_kind.setdefault(s.kind, Counter())[outcome] += 1
            if outcome == "dataerror":
                kinds[_kind_of(detail)] += 1
                refused.append(inp)
            if outcome in BAD and len(failures) < 20:
                failures.append(f"{s.name} ops={ops}: {outcome}: {detail}")
    finally:
        harness.close()
    _report(n, seed, time.perf_counter() - t0, counts, per_kind, harness, cap_mb, limit_mb)
    for line in failures:
        print("  " + line)
    if show:
        print(f"the {show} most common kinds of DataError ({len(kinds)} kinds):")
        for kind, count in kinds.most_common(show):
            print(f"  {count:6d}  {kind}")
    passable = [i for i in refused if "\0" not in i.spec]  # argv cannot hold a NUL byte
    cli_bad = cli_check(rng.sample(passable, min(cli, len(passable))), limit_mb, cli_cap_mb)
    return 0 if sum(counts[k] for k in BAD) + cli_bad == 0 else 1


def _report(n: int, seed: int, secs: float, counts: Counter[str],
            per_kind: dict[str, Counter[str]], harness: Harness, cap_mb: int,
            limit_mb: int) -> None:
    print(f"inputs tried:           {n}  ({secs:.1f} s, seed {seed})")
    print(f"accepted as valid data: {counts['valid']}")
    print(f"DataError:              {counts['dataerror']}")
    print(f"other exceptions:       {counts['other']}  (internal errors: exit 1 in the CLI)")
    print(f"bad error lines:        {counts['badline']}  (a DataError of several lines or more "
          f"than {MAX_LINE} characters)")
    print(f"memory-cap hits:        {counts['memory']}  (address space capped at start-up "
          f"+ {cap_mb} MiB: {'yes' if harness.capped else 'no, /proc unavailable'}; "
          f"VAEKIT_MAX_DATA_BYTES={limit_mb}M)")
    print(f"hangs:                  {counts['hang']}  (no answer within {harness.timeout_s:.0f} s)")
    print(f"worker peak RSS:        {harness.peak_rss_kb / 1024:.0f} MiB (after the first "
          f"input {harness.baseline_rss_kb / 1024:.0f} MiB)")
    print("by seed kind:           " + "; ".join(
        f"{k} {sum(c.values())} ({c['valid']} valid, {c['dataerror']} DataError"
        + "".join(f", {c[b]} {b}" for b in BAD if c[b]) + ")"
        for k, c in sorted(per_kind.items())))


def _files_state(folder: Path) -> dict[str, tuple[int, int, str]]:
    """(mode, size, sha256 of regular files) of everything under ``folder`` (links not
    followed)."""
    import hashlib

    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not \
            p.is_symlink() and st.st_size < 2**30 else ""
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, digest)
    return out


def _run_capped(cmd: list[str], env: dict[str, str], cwd: Path, cap_mb: int,
                timeout_s: float) -> tuple[int | None, str, int]:
    """(exit code or None on timeout, stderr, peak RSS in KiB) of ``cmd`` under RLIMIT_AS."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_mb * 2**20, resource.RLIM_INFINITY))

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd,
                                preexec_fn=cap)
        deadline, code, rss = time.monotonic() + timeout_s, None, 0
        while code is None and time.monotonic() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code, rss = os.waitstatus_to_exitcode(status), usage.ru_maxrss
            else:
                time.sleep(0.05)
        if code is None:
            proc.kill()
            os.wait4(proc.pid, 0)
        proc.returncode = code if code is not None else -9
        err.seek(0)
        return code, err.read().decode("utf-8", "replace"), rss


def cli_check(inputs: list[Input], limit_mb: int, cap_mb: int, timeout_s: float = 120) -> int:
    """Run refused inputs through ``vaekit train --data ...`` in capped child processes:
    each must exit 2 with one ``error:`` line, no traceback, no file changed. Returns the
    number that did not."""
    if not inputs:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="vaekit-fuzz-cli-"))
    env = {**os.environ, "VAEKIT_MAX_DATA_BYTES": f"{limit_mb}M", "OMP_NUM_THREADS": "1",
           "VAEKIT_NO_REPORT": "1"}
    bad, tracebacks, peak, problems = 0, 0, 0, []
    try:
        for i, inp in enumerate(inputs):
            folder = tmp / f"case{i}"
            folder.mkdir()
            sockets: list[socket.socket] = []
            for name, content in inp.files.items():
                make_file(folder / name, content, sockets)
            before = _files_state(folder)
            data = inp.spec or str(folder / inp.target if inp.target else folder)
            cmd = [sys.executable, "-m", "vaekit", "train", "--data", data, "--epochs", "1",
                   "--device", "cpu", "--no-progress", "--out", str(folder / "run")]
            code, err, rss = _run_capped(cmd, env, tmp, cap_mb, timeout_s)
            peak = max(peak, rss)
            lines = err.splitlines()
            ok = (code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
                  and _files_state(folder) == before)
            tracebacks += "Traceback" in err
            if not ok:
                bad += 1
                problems.append(f"  {data[:120]!r}: exit {code}: {err[-300:]!r}")
            for sock in sockets:
                sock.close()
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"CLI runs of refused inputs: {len(inputs)}: {len(inputs) - bad} one error line with "
          f"exit 2 and no file changed, {bad} not, {tracebacks} tracebacks; peak RSS "
          f"{peak / 1024:.0f} MiB (address space capped at {cap_mb} MiB)")
    print("\n".join(problems[:20]))
    return bad


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="inputs to try (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the campaign")
    p.add_argument("--cap-mb", type=int, default=512,
                   help="address space the worker may add after start-up (default 512)")
    p.add_argument("--limit-mb", type=int, default=8,
                   help="VAEKIT_MAX_DATA_BYTES of the worker, in MiB (default 8)")
    p.add_argument("--show-errors", type=int, default=0, metavar="K",
                   help="also print the K most common kinds of DataError")
    p.add_argument("--only", default="", metavar="KINDS",
                   help="comma-separated seed kinds to fuzz (idx, npy, npz, idxdir, npydir, "
                        "imgdir, pngdir, json, spec); default all")
    p.add_argument("--cli", type=int, default=0, metavar="K",
                   help="also run K refused inputs through `vaekit train` (a few s each)")
    p.add_argument("--cli-cap-mb", type=int, default=3072,
                   help="address space of each CLI child, in MiB (default 3072)")
    p.add_argument("--runs", type=int, default=0, metavar="N",
                   help="instead: N cases of hostile run directories, outputs and flags "
                        "through the CLI (scripts/fuzz_runs.py)")
    p.add_argument("--jobs", type=int, default=1, help="--runs: cases at a time (default 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.cap_mb)
        return 0
    if args.runs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from fuzz_runs import campaign as run_campaign

        return run_campaign(args.runs, args.seed, args.jobs)
    only = [k for k in args.only.split(",") if k]
    return campaign(args.n, args.seed, args.cap_mb, args.limit_mb, args.show_errors, only,
                    args.cli, args.cli_cap_mb)


if __name__ == "__main__":
    sys.exit(main())
