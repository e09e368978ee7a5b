"""Safe file reads and writes.

Reads: every file vaekit reads goes through :func:`open_regular` (and the helpers built on
it: :func:`read_bytes`, :func:`read_text`, :func:`read_json`, :func:`read_jsonl`). It opens
the path with ``O_NONBLOCK`` (so a FIFO without a writer cannot block) and checks the
*opened* descriptor with ``fstat`` (so a file swapped after a check cannot slip through):
anything but a regular file (a folder, FIFO, socket or device) is refused with one line and
never read. Sizes are bounded per kind of file (``JSON_LIMIT``, ``LOG_LIMIT``,
``CONFIG_LIMIT``; data files use ``vaekit.data.idx.max_data_bytes()``), checked before
reading and again while reading (a file that grows is cut off at the limit). Text is strict
UTF-8; JSON refuses nesting deeper than ``JSON_MAX_DEPTH``. Every problem is one
:class:`~vaekit.errors.VaekitError` line, of the class the caller names (``error=``:
``DataError``, ``CheckpointError``, ``ConfigError``): the CLI prints ``error: problem; fix``
with exit code 2.

Writes: ``atomic_write_*`` write to a temporary file in the same folder, flush and fsync it,
rename it over the target (atomic on POSIX) and fsync the folder, so a crash or a full disk
never leaves a truncated JSON, CSV or safetensors file behind. A write that fails (a
read-only or full location, a missing folder) raises :class:`WriteError`: a one-line user
error that is also an ``OSError``, with the temporary file removed and the target untouched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from vaekit.errors import CheckpointError, VaekitError


class WriteError(VaekitError, OSError):
    """A file could not be written (permissions, a full disk, a missing folder)."""


def _fix_for(err: OSError) -> str:
    if err.errno == errno.ENOSPC or err.errno == errno.EDQUOT:
        return "free some space (the previous file is intact) and run again"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a writable location"
    return "check the path"


def write_error(path: Path, err: OSError, what: str = "write") -> WriteError:
    """A one-line :class:`WriteError` for ``err`` raised while writing ``path``."""
    reason = err.strerror or str(err)
    return WriteError(f"cannot {what} {path}: {reason}", _fix_for(err))


def fsync_dir(path: Path) -> None:
    """Persist a folder's entries (a rename, a new file); a no-op where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600; give the file the mode open() would (0666 less the umask).
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, fsync it and rename it to ``path``."""
    path = Path(path)
    try:
        with _temporary_beside(path) as tmp:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as err:
        raise write_error(path, err) from err
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_synced(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it, in place (not atomic): for files in a folder
    that counts only once it is complete, such as ``checkpoint.new/`` before its manifest."""
    path = Path(path)
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(path, err) from err


def sha256_file(path: Path, chunk: int = 1 << 20, *,
                error: type[VaekitError] = CheckpointError) -> str:
    """Hex SHA-256 of a regular file (see :func:`open_regular`), read in chunks (bounded
    memory)."""
    h = hashlib.sha256()
    with open_regular(path, "file", error=error) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------ reading

JSON_LIMIT = 64 * 2**20  # run files: config.json, trainer.json, manifest.json, eval-*.json
LOG_LIMIT = 256 * 2**20  # appended logs: metrics.jsonl, train.log, command.txt
CONFIG_LIMIT = 16 * 2**20  # configuration files a user writes (--config YAML, TOML, JSON)
JSON_MAX_DEPTH = 64  # nesting levels; vaekit writes at most a handful
_CHUNK = 2**20


def short_reason(err: BaseException, limit: int = 160) -> str:
    """An exception as one short line (library messages may span lines or quote bytes)."""
    args = err.args
    text = getattr(err, "strerror", None) or (
        args[0] if len(args) > 1 and isinstance(args[0], str) else str(err))  # e.g. TokenError
    text = " ".join(str(text).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(path: str | Path) -> str:
    """A path for a one-line message: as is, or quoted with escapes if it holds a newline,
    another control character or bytes that are not text; at most 300 characters."""
    text = str(path)
    return one_line(text if text.isprintable() else ascii(text), 300)


def one_line(text: str, limit: int = 600) -> str:
    """``text`` with control characters escaped (``\\n``) and, beyond ``limit`` characters,
    its middle elided: what any user-facing message must be."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def human_bytes(n: int) -> str:
    """``human_bytes(3 * 2**30)`` -> ``'3.0 GiB'``; any size, however large, in one short
    word (integer arithmetic: no float overflow)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            whole = n // size
            if whole >= 10**6:
                return f"about 10^{len(str(whole)) - 1} {unit}"
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _open_fd(path: str | Path) -> int:
    """``os.open`` without blocking (a FIFO without a writer) or taking a terminal."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags)


def _open_failed(path: str | Path, what: str, err: OSError,
                 error: type[VaekitError]) -> VaekitError:
    where = f"{what} {shown(path)}"
    if isinstance(err, FileNotFoundError):
        return error(f"{where} does not exist", "check the path")
    if isinstance(err, PermissionError):
        return error(f"cannot read {where}: permission denied",
                     "make it readable (chmod u+r) or copy it somewhere readable")
    if err.errno == errno.ENXIO:  # a socket, or a FIFO opened in a way that needs a peer
        return _not_regular(path, what, error)
    return error(f"cannot read {where}: {short_reason(err)}", "check the file and its permissions")


def _not_regular(path: str | Path, what: str, error: type[VaekitError]) -> VaekitError:
    return error(f"{what} {shown(path)} is not a regular file (a pipe, socket or device)",
                 "copy it into a regular file first")


def _check_descriptor(fd: int, path: str | Path, what: str, limit: int | None,
                      error: type[VaekitError], too_big: str) -> None:
    """Refuse what the opened descriptor is not: a regular file within ``limit`` bytes."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {shown(path)} is a folder where a file is expected",
                    "pass the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, what, error)
    if limit is not None and st.st_size > limit:
        raise error(f"{what} {shown(path)} is {human_bytes(st.st_size)}, more than the limit "
                    f"of {human_bytes(limit)} for such a file", too_big)


_TOO_BIG = "check the file: vaekit writes far smaller ones"


def open_regular(path: str | Path, what: str, *, limit: int | None = None,
                 error: type[VaekitError] = VaekitError, too_big: str = _TOO_BIG) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symbolic links are
    followed) of at most ``limit`` bytes (None: any size); else raise ``error`` with one
    line naming ``what`` and the path (``too_big`` is the fix for a file above the limit).

    The path is opened with ``O_NONBLOCK`` and the opened descriptor is checked (fstat),
    so neither a FIFO nor a file swapped for one after an earlier check can block.
    """
    try:
        fd = _open_fd(path)
    except OSError as err:
        raise _open_failed(path, what, err, error) from None
    try:
        _check_descriptor(fd, path, what, limit, error, too_big)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException as err:
        os.close(fd)
        if isinstance(err, OSError):
            raise _open_failed(path, what, err, error) from None
        raise


def read_bytes(path: str | Path, limit: int, what: str, *,
               error: type[VaekitError] = VaekitError, too_big: str = _TOO_BIG) -> bytes:
    """The content of the regular file ``path`` (see :func:`open_regular`), at most
    ``limit`` bytes: a larger file, or one that grows past the limit while it is read, is
    refused with ``error`` before more than ``limit + 1`` bytes are held."""
    with open_regular(path, what, limit=limit, error=error, too_big=too_big) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            data = bytearray(f.read(size + 1))  # +1: a file that grew
            while len(data) <= limit and (block := f.read(min(_CHUNK, limit + 1 - len(data)))):
                data += block
        except OSError as err:
            raise _open_failed(path, what, err, error) from None
    if len(data) > limit:
        raise error(f"{what} {shown(path)} grew past the limit of {human_bytes(limit)} for "
                    "such a file while it was read", too_big)
    return bytes(data)


def decode_text(data: bytes, path: str | Path, what: str, *,
                error: type[VaekitError] = VaekitError) -> str:
    """``data`` as strict UTF-8 (a leading byte-order mark dropped); else one ``error``
    line giving the offset of the first invalid byte."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise error(f"{what} {shown(path)} is not UTF-8 text (invalid byte 0x"
                    f"{data[err.start]:02x} at offset {err.start})",
                    "restore the file, or save it as UTF-8") from None


def read_text(path: str | Path, limit: int, what: str, *,
              error: type[VaekitError] = VaekitError, too_big: str = _TOO_BIG) -> str:
    """The regular file ``path`` as UTF-8 text, at most ``limit`` bytes (see
    :func:`read_bytes` and :func:`decode_text`)."""
    data = read_bytes(path, limit, what, error=error, too_big=too_big)
    return decode_text(data, path, what, error=error)


def _too_deep(value: Any, max_depth: int) -> bool:
    """Whether lists and dicts in ``value`` nest deeper than ``max_depth`` (iterative)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_json(text: str, path: str | Path, what: str, *,
               error: type[VaekitError] = VaekitError, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """The JSON value in ``text`` (read from ``path``), or one ``error`` line: invalid JSON
    (with its line and column), nesting deeper than ``max_depth``, numbers of more digits
    than Python converts."""
    fix = "restore the file as vaekit wrote it"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{what} {shown(path)} is not valid JSON ({err.msg} at line {err.lineno}, "
                    f"column {err.colno})", fix) from None
    except RecursionError:
        raise error(f"{what} {shown(path)} nests deeper than {max_depth} levels", fix) from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise error(f"{what} {shown(path)} is not valid JSON ({short_reason(err)})", fix) from None
    if isinstance(value, (dict, list)) and _too_deep(value, max_depth):
        raise error(f"{what} {shown(path)} nests deeper than {max_depth} levels", fix)
    return value


def read_json(path: str | Path, limit: int, what: str, *,
              error: type[VaekitError] = VaekitError, too_big: str = _TOO_BIG) -> Any:
    """The JSON value in the regular file ``path`` of at most ``limit`` bytes (e.g.
    ``JSON_LIMIT``): bounded read, strict UTF-8, bounded nesting, one ``error`` line for
    any problem."""
    text = read_text(path, limit, what, error=error, too_big=too_big)
    return parse_json(text, path, what, error=error)


def read_jsonl(path: str | Path, limit: int, what: str, *,
               error: type[VaekitError] = VaekitError, too_big: str = _TOO_BIG) -> list[Any]:
    """One JSON value per non-blank line of the regular file ``path`` (e.g. metrics.jsonl,
    ``LOG_LIMIT``); an invalid line is one ``error`` line naming its number."""
    text = read_text(path, limit, what, error=error, too_big=too_big)
    return [parse_json(line, path, f"line {n} of {what}", error=error)
            for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def append_text(path: str | Path, text: str, what: str) -> None:
    """Append ``text`` to the regular file ``path`` (created when missing): a FIFO, device
    or folder there is refused with one line instead of blocking or writing into it."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
             | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if err.errno == errno.ENXIO:  # a FIFO without a reader
            raise _not_regular(path, what, WriteError) from None
        raise write_error(Path(path), err, f"append to {what}") from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_regular(path, what, WriteError)
        os.write(fd, text.encode("utf-8"))
    except OSError as err:
        raise write_error(Path(path), err, f"append to {what}") from err
    finally:
        os.close(fd)


class DirectoryLock:
    """An exclusive lock on a folder (``fcntl.flock`` on the empty file ``FOLDER/.lock``):
    one writing process per run directory; a refusal names the holder's pid (from
    ``/proc/locks``, where the kernel lists it). The kernel drops it when the
    process ends, however it ends (a ``kill -9`` included), so a stale lock file never
    blocks. Within one process it is reentrant (a script that sets a run up stage after
    stage holds it once); it is released when the last holder releases it or is collected."""

    NAME = ".lock"
    _held: ClassVar[dict[str, list[int]]] = {}  # resolved lock path -> [descriptor, holders]

    def __init__(self, folder: Path, what: str) -> None:
        self.path, self.what, self.key = Path(folder) / self.NAME, what, ""

    def acquire(self) -> DirectoryLock:
        """Take the lock, or raise WriteError naming the pid that holds it."""
        key = str(self.path.resolve())
        if key in self._held:  # this process holds it already
            self._held[key][1] += 1
            self.key = key
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise write_error(self.path, err, "lock") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _flock_holder(fd)
            os.close(fd)
            raise WriteError(f"{self.what} {self.path.parent} is in use by another vaekit "
                             f"process (pid {holder})", "wait for it to finish, or stop it "
                             "first") from None
        self._held[key], self.key = [fd, 1], key
        return self

    def release(self) -> None:
        key, self.key = self.key, ""
        entry = self._held.get(key) if key else None
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del self._held[key]
                os.close(entry[0])  # closing the descriptor drops the flock

    def __del__(self) -> None:
        self.release()


def _flock_holder(fd: int) -> str:
    """The pid holding a flock on the file open as ``fd`` (Linux's ``/proc/locks``), or ?."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == inode:
                    return parts[4]
    except OSError:
        pass
    return "?"
