"""Safe file writes: a file is either its old content or its complete new content.

``atomic_write_*`` write to a temporary file in the same folder, flush and fsync it, rename
it over the target (atomic on POSIX) and fsync the folder, so a crash or a full disk never
leaves a truncated JSON, CSV or safetensors file behind. A write that fails (a read-only
or full location, a missing folder) raises :class:`WriteError`: a one-line user error that
is also an ``OSError``, with the temporary file removed and the target untouched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from vaekit.errors import VaekitError


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
