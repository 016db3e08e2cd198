"""Small file helpers every stage shares: content hashes, advisory locks, atomic writes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

BLOCK = 1 << 20
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class FileLock:
    """An open lock file (flock): held by this process until the `file_lock` block ends."""

    def __init__(self, fd: int):
        self.fd = fd

    def try_acquire(self, exclusive: bool = True) -> bool:
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def acquire(self, exclusive: bool = True) -> None:
        """Wait for the lock (or turn an exclusive lock into a shared one)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


@contextlib.contextmanager
def file_lock(path: Path, *, exclusive: bool = True, waiting: str | None = None, acquire: bool = True,
              echo: Callable[[str], None] = _stderr) -> Iterator[FileLock]:
    """Hold an flock on `path` (created if needed) for the block.

    Taken at once if free; otherwise `waiting` is echoed and the lock awaited, or, with
    waiting=None, BlockingIOError is raised. acquire=False opens the file and leaves the
    locking to the caller (lock.try_acquire(), lock.acquire())."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    try:
        if acquire and not lock.try_acquire(exclusive):
            if waiting is None:
                raise BlockingIOError(f"{path} is locked")
            echo(waiting)
            lock.acquire(exclusive)
        yield lock
    finally:
        os.close(lock.fd)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o644, doing: str | None = None) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    The bytes go to a temporary file beside `path` (a unique name: two writers never share
    it), are flushed to disk, and the file is renamed over `path`. Whatever fails (a full
    disk, a read-only folder, Ctrl-C), the temporary file is removed and `path` is as it was;
    a file-system fault is raised as the one-line error of builder.errors (DiskFullError,
    FileAccessError) naming `path`.
    """
    from builder.errors import from_os_error

    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            _write_fd(fd, data)
            os.fchmod(fd, mode & ~_UMASK)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        # Named by the file meant, not the temporary one.
        error = from_os_error(OSError(e.errno, e.strerror, str(path)), doing or "writing it")
        if error is None:
            raise
        raise error from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path
