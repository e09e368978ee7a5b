"""Fuzz vaekit's data readers: every malformed input must end in vaekit's own DataError (or
load as valid data), never in another exception, a hang or a memory blow-up.

    .venv/bin/python scripts/fuzz.py --n 2000 [--seed 0] [--cap-mb 512] [--limit-mb 8]

Inputs are mutations of small valid IDX (raw and gzip), NPY, NPZ files, IDX and NPY folders
and PNG/JPEG image folders: truncation, bit flips, overwritten/inserted/deleted bytes, IDX
dimensions and type codes edited (huge, zero), gzip bombs (a small header over a body that
inflates to 1 GiB), .npy headers edited (huge or negative shapes, object/string/wide dtypes,
Fortran order, format version), .npz members pickled, renamed, recompressed or given false
sizes, random garbage. Each input goes to ``load_dataset(path)`` and, for a single file, to
its reader (``read_idx`` / ``read_npy``), in a worker process whose address space is capped
(``RLIMIT_AS``: its size after start-up plus ``--cap-mb``) with ``VAEKIT_MAX_DATA_BYTES`` =
``--limit-mb``: an allocation beyond the cap is a memory-cap hit. Prints the counts (inputs,
valid, DataError, other exceptions, memory-cap hits, hangs) and the worker's peak RSS; exits
1 if anything other than valid/DataError happened. ``tests/test_fuzz.py`` runs the same
harness under hypothesis.
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
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
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
    """A valid input: ``kind`` (idx, npy, npz, idxdir, npydir, imgdir), its files, which file
    the mutations hit, and for IDX whether it is gzipped / for NPZ the members."""

    name: str
    kind: str
    files: dict[str, bytes]
    target: str
    gz: bool = False
    members: dict[str, bytes] = field(default_factory=dict)


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


# -------------------------------------------------------------------- building


OP_TABLE: dict[str, list[Callable]] = {
    "idx": [*GENERIC, *IDX, gzip_bomb],
    "npy": [*GENERIC, *NPY],
    "npz": [*GENERIC, *NPY, *GENERIC_ZIP, member_extra, member_extra],
    "idxdir": [*GENERIC, *IDX],
    "npydir": [*GENERIC, *NPY],
    "imgdir": GENERIC,
}


@dataclass
class Input:
    kind: str
    files: dict[str, bytes]  # name -> bytes, written into one folder
    target: str  # the path given to load_dataset: a file name, or "" for the folder
    reader: str | None  # "idx" / "npy": also call that reader on the target file


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
    bomb = None
    for code, a, b in ops:
        op = table[code % len(table)]
        if seed.kind == "npz":
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
    files = dict(seed.files)
    files[seed.target] = data
    single = seed.kind in ("idx", "npy", "npz")
    return Input(seed.kind, files, seed.target if single else "",
                 seed.kind if seed.kind in ("idx", "npy") else None)


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


def _attempt(fn: Callable[[], object]) -> tuple[str, str]:
    try:
        fn()
    except Exception as err:
        return _classify(err), f"{type(err).__name__}: {str(err)[:300]}"
    return "valid", ""


def worker(cap_mb: int) -> None:
    """Read JSON requests {"path", "reader"} line by line, answer {"outcome", "detail",
    "maxrss_kb"}; the address space is capped after start-up."""
    import resource
    import warnings

    import torch

    from vaekit.data.datasets import load_dataset, read_npy
    from vaekit.data.idx import read_idx

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    readers = {"idx": read_idx, "npy": read_npy}
    with tempfile.TemporaryDirectory() as tmp:  # warm up every reader before the cap
        for seed in seeds():
            inp = build(seed, [])
            for name, blob in inp.files.items():
                Path(tmp, name).write_bytes(blob)
            load_dataset(str(Path(tmp, inp.target)))
            for name in inp.files:
                Path(tmp, name).unlink()
    vm = _vm_bytes()
    if vm is not None:
        limit = vm + cap_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    print(json.dumps({"ready": True, "capped": vm is not None}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        outcome, detail = _attempt(lambda: load_dataset(req["path"]))  # noqa: B023
        if req.get("reader") and outcome in ("valid", "dataerror"):
            r_out, r_detail = _attempt(lambda: readers[req["reader"]](req["path"]))  # noqa: B023
            if r_out not in ("valid", "dataerror"):
                outcome, detail = r_out, f"reader: {r_detail}"
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
            text=True, env=env)
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
        for name, blob in inp.files.items():
            (folder / name).write_bytes(blob)
        path = folder / inp.target if inp.target else folder
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"path": str(path), "reader": inp.reader}) + "\n")
            self.proc.stdin.flush()
            reply = self._reply(self.timeout_s)
        except BrokenPipeError:
            reply = None
        finally:
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


def campaign(n: int, seed: int, cap_mb: int, limit_mb: int, show: int = 0) -> int:
    rng, corpus = random.Random(seed), seeds()
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    failures: list[str] = []
    harness = Harness(cap_mb, limit_mb)
    t0 = time.perf_counter()
    try:
        for i in range(n):
            s = corpus[i % len(corpus)] if i < len(corpus) else rng.choice(corpus)
            ops = [] if i < len(corpus) else random_ops(rng)
            outcome, detail = harness.run(build(s, ops))
            counts[outcome] += 1
            if outcome == "dataerror":
                kinds[_kind_of(detail)] += 1
            if outcome not in ("valid", "dataerror") and len(failures) < 20:
                failures.append(f"{s.name} ops={ops}: {outcome}: {detail}")
    finally:
        harness.close()
    secs = time.perf_counter() - t0
    print(f"inputs tried:           {n}  ({secs:.1f} s, seed {seed})")
    print(f"accepted as valid data: {counts['valid']}")
    print(f"DataError:              {counts['dataerror']}")
    print(f"other exceptions:       {counts['other']}")
    print(f"memory-cap hits:        {counts['memory']}  (address space capped at start-up "
          f"+ {cap_mb} MiB: {'yes' if harness.capped else 'no, /proc unavailable'}; "
          f"VAEKIT_MAX_DATA_BYTES={limit_mb}M)")
    print(f"hangs:                  {counts['hang']}")
    print(f"worker peak RSS:        {harness.peak_rss_kb / 1024:.0f} MiB (after the first "
          f"input {harness.baseline_rss_kb / 1024:.0f} MiB)")
    for line in failures:
        print("  " + line)
    if show:
        print(f"the {show} most common kinds of DataError ({len(kinds)} kinds):")
        for kind, count in kinds.most_common(show):
            print(f"  {count:6d}  {kind}")
    return 0 if counts["other"] + counts["memory"] + counts["hang"] == 0 else 1


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
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.cap_mb)
        return 0
    return campaign(args.n, args.seed, args.cap_mb, args.limit_mb, args.show_errors)


if __name__ == "__main__":
    sys.exit(main())
