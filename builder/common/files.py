"""Small file helpers every stage shares: content hashes and advisory locks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

BLOCK = 1 << 20


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
