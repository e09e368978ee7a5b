"""Issue 21, data layer: every file vaekit reads goes through one bounded reader
(:mod:`vaekit.io`), and hostile data files end in one clean line (exit 2) with nothing
allocated beyond a bound and nothing written: IDX headers of 255 dimensions, gzip files
declaring more than they can hold, PNG decompression bombs, 16-bit and EXIF-rotated images,
npz members longer than declared, unknown or absurd dataset options, FIFOs, devices and
symbolic links as data files."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.data.datasets import OPTIONS, load_dataset, read_npy
from vaekit.data.idx import read_idx
from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.io import (
    human_bytes,
    open_regular,
    read_bytes,
    read_json,
    read_jsonl,
    read_text,
    sha256_file,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_hang():
    """A read that blocks (a FIFO opened without O_NONBLOCK) fails the test instead of
    hanging the suite."""
    def alarm(*_):
        raise TimeoutError("the read blocked")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and 10 < len(msg) < 400, msg
    return msg


def traced_peak(fn) -> int:
    """Peak bytes allocated (Python and numpy, via tracemalloc) while ``fn()`` runs; a
    VaekitError it raises is swallowed."""
    tracemalloc.start()
    try:
        fn()
    except (DataError, CheckpointError, ConfigError):
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def refused_by_train(cli, snapshot, tmp_path: Path, data: Path | str, *fragments: str) -> None:
    """``vaekit train --data DATA`` ends in one `error:` line with exit 2 and writes nothing."""
    before = snapshot(tmp_path)
    res = cli("train", "--data", data, "--epochs", "1", "--device", "cpu", "--no-progress",
              "--out", tmp_path / "run")
    res.assert_user_error(*fragments)
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the bounded reader


def test_read_json_reads_regular_files(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"x": [1, 2, {"y": None}]}))
    assert read_json(path, 2**20, "run file") == {"x": [1, 2, {"y": None}]}
    (tmp_path / "link.json").symlink_to(path)  # links to regular files are followed
    assert read_json(tmp_path / "link.json", 2**20, "run file")["x"][0] == 1
    path.write_bytes(b"\xef\xbb\xbf[1]")  # a byte-order mark is dropped
    assert read_json(path, 100, "run file") == [1]
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path, 100, "metrics") == [{"a": 1}, {"a": 2}]
    assert read_text(path, 100, "log").startswith('{"a"')


@pytest.mark.parametrize("error", [DataError, CheckpointError, ConfigError])
def test_non_regular_files_are_refused_without_blocking(tmp_path, error):
    os.mkfifo(tmp_path / "fifo.json")  # no writer: a plain open() would block forever
    (tmp_path / "folder.json").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.json"))
    (tmp_path / "dev.json").symlink_to("/dev/zero")  # endless: a plain read never ends
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    cases = {"fifo.json": "not a regular file", "folder.json": "is a folder",
             "sock.json": "not a regular file", "dev.json": "not a regular file",
             "dangling.json": "does not exist", "loop.json": "cannot read",
             "missing.json": "does not exist"}
    try:
        for name, fragment in cases.items():
            for read in (lambda p: read_json(p, 2**20, "trainer state", error=error),
                         lambda p: sha256_file(p, error=error),
                         lambda p: open_regular(p, "file", error=error)):
                with pytest.raises(error) as err:
                    read(tmp_path / name)
                assert fragment in one_line(err) and name in str(err.value), name
    finally:
        sock.close()


def test_a_sparse_file_above_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "config.json"
    with open(path, "wb") as f:
        f.truncate(3 * 2**30)  # 3 GiB, no disk used
    peak = traced_peak(lambda: read_json(path, 64 * 2**20, "run config", error=CheckpointError))
    with pytest.raises(CheckpointError) as err:
        read_json(path, 64 * 2**20, "run config", error=CheckpointError)
    assert "3.0 GiB, more than the limit of 64.0 MiB" in one_line(err)
    assert peak < 2**20


def test_a_file_that_grows_while_read_is_cut_at_the_limit(tmp_path, monkeypatch):
    """/proc files report size 0 and may be longer; reading stops one byte past the limit."""
    assert read_bytes("/proc/self/status", 2**20, "status")  # size 0 in fstat, yet read
    with pytest.raises(DataError) as err:
        read_bytes("/proc/self/status", 10, "status", error=DataError)
    assert "grew past the limit of 10 bytes" in one_line(err)


@pytest.mark.parametrize("content, fragment", [
    (b'{"a": \xff}', "not UTF-8 text (invalid byte 0xff at offset 6)"),
    (b"[" * 100000 + b"]" * 100000, "nests deeper than"),  # RecursionError in json
    (b"[" * 65 + b"]" * 65, "nests deeper than 64 levels"),  # parses, too deep to use
    (b'{"a": 1', "not valid JSON (Expecting"),
    (b"1" * 5000, "not valid JSON"),  # more digits than int() converts
    (b"", "not valid JSON"),
])
def test_invalid_json_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "eval-test.json"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_json(path, 2**20, "evaluation file", error=CheckpointError)
    assert fragment in one_line(err) and "eval-test.json" in str(err.value)


def test_nesting_up_to_the_limit_parses(tmp_path):
    (tmp_path / "ok.json").write_text("[" * 64 + "]" * 64)
    value = read_json(tmp_path / "ok.json", 2**20, "file")
    for _ in range(63):
        value = value[0]
    assert value == []


def test_jsonl_errors_name_the_line_and_paths_stay_one_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": \n')
    with pytest.raises(CheckpointError) as err:
        read_jsonl(path, 2**20, "metrics file", error=CheckpointError)
    assert "line 2 of metrics file" in one_line(err)
    odd = tmp_path / "a\nb.json"
    with pytest.raises(DataError) as err:
        read_json(odd, 100, "file", error=DataError)
    assert "a\\nb.json" in one_line(err)


def test_sizes_of_any_magnitude_are_one_short_word():
    assert human_bytes(3 * 2**30) == "3.0 GiB" and human_bytes(12) == "12 bytes"
    assert human_bytes(2**40 * 10**400) == "about 10^400 TiB"  # no float overflow


# ------------------------------------------------------------------------------ IDX


def idx_header(code: int, dims: list[int]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_with_255_dimensions_is_one_line(tmp_path, cli, snapshot, gz):
    """It once ended in an OverflowError in format_bytes (gzip) or a 2,000-digit line."""
    head = idx_header(0x08, [2**32 - 1] * 255)
    path = tmp_path / ("d.idx.gz" if gz else "d.idx")
    path.write_bytes(gzip.compress(head) if gz else head)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert "255 dimensions" in one_line(err)
    refused_by_train(cli, snapshot, tmp_path, path, "255 dimensions")
    path.write_bytes(idx_header(0x08, [1] * 40) + b"\x07")  # 1 value, 40 dimensions
    refused_by_train(cli, snapshot, tmp_path, path, "40 dimensions; vaekit reads at most 32")


def test_a_small_gz_declaring_gigabytes_is_refused_before_allocating(tmp_path, cli, snapshot):
    """2 KB of gzip cannot hold 3 GB (deflate packs at most 1032:1): refused as truncated,
    without allocating the 3 GB the header declares (it used to, then blamed the batch)."""
    d = tmp_path / "data"
    d.mkdir()
    head = idx_header(0x08, [3000, 1000, 1000])
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + bytes(2 * 10**6)))
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(head))
    assert (d / "train-images-idx3-ubyte.gz").stat().st_size < 2500
    peak = traced_peak(lambda: read_idx(d / "train-images-idx3-ubyte.gz"))
    with pytest.raises(DataError) as err:
        read_idx(d / "train-images-idx3-ubyte.gz")
    assert "truncated" in one_line(err) and "more than a gzip file of its size can hold" in str(
        err.value)
    assert peak < 4 * 2**20, peak  # the gzip stream's buffers, not 3 GB
    refused_by_train(cli, snapshot, tmp_path, d, "truncated")


@pytest.mark.parametrize("extra, fragment", [(-1, "truncated"), (1, "longer than its header")])
def test_gz_content_other_than_its_header_declares_is_refused(tmp_path, extra, fragment):
    values = np.arange(60, dtype=np.uint8)
    body = values.tobytes()[:extra] if extra < 0 else values.tobytes() + b"\0" * extra
    (tmp_path / "d.gz").write_bytes(gzip.compress(idx_header(0x08, [6, 10]) + body))
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "d.gz")
    assert fragment in one_line(err)


def test_the_limit_counts_the_float32_copy_not_the_stored_bytes(tmp_path, monkeypatch):
    """512 KiB of uint8 are 2 MiB of float32 model inputs: above a 1 MiB limit."""
    monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", "1M")
    (tmp_path / "d.gz").write_bytes(gzip.compress(idx_header(0x08, [512, 1024])
                                                  + bytes(2**19)))
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "d.gz")
    assert "2.0 MiB in memory as model inputs, more than the limit of 1.0 MiB" in one_line(err)
    np.save(tmp_path / "u16.npy", np.zeros((100, 1024), np.uint16))  # 200 KiB, read as int64
    monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", "700K")
    with pytest.raises(DataError) as err:
        read_npy(tmp_path / "u16.npy")
    assert "800.0 KiB in memory as model inputs" in one_line(err)


# ----------------------------------------------------------------------------- images


def png_bytes(w: int, h: int, depth: int = 8, color: int = 0, exif: bytes | None = None,
              exif_after_pixels: bool = False) -> bytes:
    """A PNG of zeros written chunk by chunk (a 12000x12000 one in well under a second and
    little memory); ``color``: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    row = b"\0" + bytes(w * channels * depth // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
    ex = chunk(b"eXIf", exif) if exif is not None else b""
    pixels = chunk(b"IDAT", idat)
    body = pixels + ex if exif_after_pixels else ex + pixels
    return b"\x89PNG\r\n\x1a\n" + ihdr + body + chunk(b"IEND", b"")


def peak_rss_growth_mb(path: Path, limit: str) -> tuple[str, float]:
    """(outcome, MB of peak-RSS growth) of load_dataset(path) in a fresh process."""
    code = ("import json, resource, sys\n"
            "from vaekit.data.datasets import load_dataset\n"
            "import PIL.Image, PIL.PngImagePlugin, PIL.ImageOps\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_dataset(sys.argv[1]); out = 'loaded'\n"
            "except Exception as e:\n    out = type(e).__name__ + ': ' + str(e)\n"
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(json.dumps([out, (after - before) / 1024]))\n")
    env = {**os.environ, "VAEKIT_MAX_DATA_BYTES": limit, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    return tuple(json.loads(res.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """3 PNGs of 12000x12000 grey zeros: ~420 KB on disk, 432 M values (1.7 GB as float32)."""
    d = tmp_path_factory.mktemp("bomb")
    blob = png_bytes(12000, 12000)
    for i in range(3):
        (d / f"{i}.png").write_bytes(blob)
    return d


def test_a_png_bomb_is_refused_from_its_headers_before_decoding(bomb, tmp_path, cli, snapshot,
                                                                monkeypatch):
    """The folder's float32 size (1.7 GB) is checked from the headers against a 1 GiB limit:
    nothing is decoded (it once reached 2.9 GB of RSS first)."""
    outcome, grew = peak_rss_growth_mb(bomb, "1G")
    assert outcome.startswith("DataError") and "more than the limit of 1.0 GiB" in outcome
    assert "1.6 GiB in memory as model inputs" in outcome
    assert grew < 64, grew
    monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", "1G")
    refused_by_train(cli, snapshot, bomb, bomb, "more than the limit of 1.0 GiB")


def test_one_huge_image_among_small_ones_is_refused_before_decoding(bomb, tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "0.png")
    (tmp_path / "1.png").symlink_to(bomb / "0.png")
    outcome, grew = peak_rss_growth_mb(tmp_path, "4G")
    assert "1.png is 12000x12000 L, but the first image" in outcome and grew < 64, grew


@pytest.mark.parametrize("depth, color, mode", [(16, 0, "I;16"), (16, 2, "RGB"),
                                                (16, 4, "LA"), (16, 6, "RGBA")])
def test_sixteen_bit_pngs_are_refused_not_cut_to_eight_bits(tmp_path, cli, snapshot, depth,
                                                            color, mode):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(4, 5, depth, color))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    assert "16-bit" in one_line(err) and "8-bit" in str(err.value)
    refused_by_train(cli, snapshot, tmp_path, tmp_path, "16-bit")


def test_eight_bit_grey_with_alpha_loads_as_four_channels(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(4, 5, 8, 4))
    assert load_dataset(str(tmp_path)).shape == (4, 5, 4)


def exif_orientation(value: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = value
    return ex.tobytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    """A sideways photo with orientation 6 (rotate 90 degrees clockwise to view) is read
    upright, as viewers show it, beside images stored upright."""
    upright = np.zeros((6, 4), np.uint8)  # (H, W): tall
    upright[0, :] = 255  # the top row is white
    stored = np.rot90(upright, 1)  # (4, 6): stored sideways, the white row on the left
    ext = fmt.lower().replace("jpeg", "jpg")
    Image.fromarray(stored).save(tmp_path / f"0.{ext}", format=fmt, exif=exif_orientation(6),
                                 **({"quality": 100} if fmt == "JPEG" else {}))
    for i in (1, 2):
        Image.fromarray(upright).save(tmp_path / f"{i}.{ext}", format=fmt,
                                      **({"quality": 100} if fmt == "JPEG" else {}))
    ds = load_dataset(str(tmp_path))
    assert ds.shape == (6, 4)
    for x in (*ds.train, *ds.test):
        assert x[0].float().mean() > 200 and x[1:].float().mean() < 30  # white row on top


def test_an_orientation_stored_after_the_pixels_is_caught_when_decoded(tmp_path):
    """Pillow sees an eXIf chunk after the pixels only once it decodes them: the header
    pass reads 1.png as upright 4x6, its decoded orientation differs, and it is refused."""
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(6, 4, exif=exif_orientation(6) if i == 1
                                                      else None, exif_after_pixels=True))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    assert "1.png is 6x4 once its EXIF orientation is applied" in one_line(err)


def test_pillow_warnings_never_reach_stderr(bomb, tmp_path, cli, capsys, monkeypatch):
    """Pillow's DecompressionBombWarning (above 89 M pixels) is not printed: the error line
    stays the only line."""
    monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", "1G")
    res = cli("train", "--data", bomb, "--out", tmp_path / "run")
    res.assert_user_error("more than the limit")
    assert "Warning" not in res.err


# --------------------------------------------------------------------------- npy / npz


def npy_blob(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def npz_with(blob: bytes, method: int = zipfile.ZIP_DEFLATED, size_delta: int = 0) -> bytes:
    """An npz of one member ``x.npy``; ``size_delta`` edits the declared uncompressed size
    (central directory and local header)."""
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", method) as zf:
        zf.writestr("x.npy", blob)
    out = bytearray(z.getvalue())
    for sig, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        i = out.find(sig) + offset
        out[i:i + 4] = struct.pack("<I", struct.unpack("<I", out[i:i + 4])[0] + size_delta)
    return bytes(out)


X = np.arange(40, dtype=np.float32).reshape(10, 4)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("case, blob, delta, fragment", [
    ("member-longer-than-its-array", npy_blob(X) + b"x" * 64, 0, "longer than its header"),
    ("declared-size-larger", npy_blob(X), 16, "longer than its header"),
    ("declared-size-2GiB", npy_blob(X), 2**31, "longer than its header"),
    ("data-inflating-past-declared", npy_blob(X) + b"x" * 64, -64, "CRC"),
    ("declared-size-smaller", npy_blob(X), -16, "npz"),
])
def test_npz_members_must_be_exactly_what_they_declare(tmp_path, cli, snapshot, method, case,
                                                       blob, delta, fragment):
    """Each used to load (the first 10 rows, whatever followed them) with exit 0."""
    path = tmp_path / "d.npz"
    path.write_bytes(npz_with(blob, method, delta))
    peak = traced_peak(lambda: load_dataset(str(path)))
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    assert fragment in one_line(err), case
    assert peak < 2**20
    refused_by_train(cli, snapshot, tmp_path, path, fragment)


def test_a_valid_npz_still_loads(tmp_path):
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        (tmp_path / "d.npz").write_bytes(npz_with(npy_blob(X), method))
        assert load_dataset(str(tmp_path / "d.npz")).train.shape[1:] == (4,)


def test_npy_with_trailing_bytes_or_too_many_dimensions_is_refused(tmp_path, cli, snapshot):
    (tmp_path / "t.npy").write_bytes(npy_blob(X) + b"\0" * 8)
    with pytest.raises(DataError) as err:
        read_npy(tmp_path / "t.npy")
    assert "longer than its header declares" in one_line(err)
    (tmp_path / "t.npy").unlink()
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {(1,) * 70}, }}\n"
    header = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()
    (tmp_path / "deep.npy").write_bytes(header + bytes(4))  # 70 dimensions: numpy holds 64
    refused_by_train(cli, snapshot, tmp_path, tmp_path / "deep.npy", "70 dimensions")


# ------------------------------------------------------------------- dataset options


@pytest.mark.parametrize("spec, fragments", [
    ("digits:bad=1", ("dataset 'digits' takes no options", "'bad'")),
    ("fashion-mnist:n=5", ("takes no options",)),
    ("mnist:limit=5", ("takes no options",)),
    ("ring:bad=1", ("dataset 'ring' has no option 'bad'", "its options are n, noise")),
    ("manifold:k=3", ("its options are r, d, n, noise",)),
    ("ring:n=abc", ("n='abc'", "not a finite int")),
    ("ring:n=", ("not a finite int",)),
    ("ring:n=-1", ("must be between 1 and",)),
    ("ring:n=0", ("must be between 1 and",)),
    ("ring:n=1e30", ("must be between 1 and 1e+12",)),
    ("ring:n=" + "9" * 400, ("must be between", "...")),
    ("ring:noise=-0.5", ("must be between 0.0 and",)),
    ("ring:noise=1e300", ("noise='1e300' of dataset 'ring' must be between",)),
    ("ring:noise=nan", ("not a finite float",)),
    ("manifold:d=0", ("d='0'", "must be between 1")),
    ("manifold:r=x", ("not a finite int",)),
    ("manifold:r=5,d=3", ("0 < r <= d",)),
    ("ring:n=10,n=20", ("given twice",)),
    ("ring:n", ("bad dataset option",)),
])
def test_dataset_options_are_checked(tmp_path, cli, snapshot, spec, fragments):
    with pytest.raises(DataError) as err:
        load_dataset(spec)
    msg = one_line(err)
    assert all(f in msg for f in fragments), msg
    refused_by_train(cli, snapshot, tmp_path, spec, *fragments)


@pytest.mark.parametrize("name, option", [(n, o) for n, opts in OPTIONS.items() for o in opts])
def test_every_declared_option_is_read_by_its_loader(name, option):
    """No declared option is silently ignored: a bad value of each is refused by name."""
    with pytest.raises(DataError) as err:
        load_dataset(f"{name}:{option}=abc")
    assert f"{option}='abc'" in one_line(err)


def test_a_path_with_a_colon_is_a_path(tmp_path):
    d = tmp_path / "a:b"  # once "bad dataset option 'b/x.npy'"
    d.mkdir()
    np.save(d / "x.npy", X)
    assert load_dataset(str(d / "x.npy")).train.shape[1:] == (4,)


# ------------------------------------------------- FIFOs, devices and links as data


@pytest.mark.parametrize("name", ["x.npy", "x.npz", "x.idx", "train-images-idx3-ubyte"])
def test_fifos_and_devices_as_data_files_are_refused_without_blocking(tmp_path, cli, snapshot,
                                                                      name):
    os.mkfifo(tmp_path / f"fifo-{name}")
    (tmp_path / f"dev-{name}").symlink_to("/dev/zero")
    for path in (tmp_path / f"fifo-{name}", tmp_path / f"dev-{name}"):
        with pytest.raises(DataError) as err:
            load_dataset(str(path))
        assert "not a regular file" in one_line(err)
        refused_by_train(cli, snapshot, tmp_path, path, "not a regular file")


def test_links_to_data_files_are_followed_and_broken_ones_are_one_line(tmp_path, cli,
                                                                       snapshot):
    np.save(tmp_path / "real.npy", X)
    (tmp_path / "link.npy").symlink_to(tmp_path / "real.npy")
    assert load_dataset(str(tmp_path / "link.npy")).train.shape[1:] == (4,)
    (tmp_path / "gone.npy").symlink_to(tmp_path / "nowhere.npy")
    refused_by_train(cli, snapshot, tmp_path, tmp_path / "gone.npy", "does not exist")
    (tmp_path / "loop.npy").symlink_to(tmp_path / "loop.npy")
    refused_by_train(cli, snapshot, tmp_path, tmp_path / "loop.npy", "loop.npy")


def test_a_fifo_among_images_is_skipped_and_a_fifo_train_file_is_not_data(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / f"{i}.png")
    os.mkfifo(tmp_path / "3.png")  # not a regular file: not one of the images
    assert load_dataset(str(tmp_path)).shape == (4, 4)
    d = tmp_path / "idx"
    d.mkdir()
    os.mkfifo(d / "train-images-idx3-ubyte")
    os.mkfifo(d / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError) as err:
        load_dataset(str(d))
    assert "holds no dataset" in one_line(err)
