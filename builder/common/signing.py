"""The per-user signing key, and what is signed with it: records moshi-build writes in places
anyone can edit (the wheel cache's entries, the index's list of its files). A record it did
not sign with this user's key is not trusted: the key lives outside those places, in the
user's configuration folder, so rewriting a record there cannot forge its signature."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from builder.errors import FileAccessError

KEY_FILE = "signing.key"


def signing_key_path() -> Path:
    """The per-user signing key: outside the cache, in the user's configuration folder."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "moshi-build" / KEY_FILE


def _read_key(path: Path) -> bytes | None:
    """The key in `path` when it is a regular 32-byte file (never through a link); None when
    absent; raises ValueError when something else is there (a link, a folder, another size)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:        # ELOOP: a link; anything else that cannot be opened as a file
        raise ValueError(f"not a regular file ({e.strerror or e})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a regular file")
    with os.fdopen(fd, "rb") as f:
        key = f.read(64)
    if len(key) != 32:
        raise ValueError(f"{len(key)} bytes, not 32")
    return key


def _signing_key(create: bool) -> bytes | None:
    """32 random bytes made once per user (mode 0600); None when absent and not to be made.
    A key file that is not a regular 32-byte file (a link, another size) is not used: with
    `create` it is replaced atomically by a new key (entries signed with the old one are then
    built again), without it the key is None (no entry is trusted)."""
    path = signing_key_path()
    try:
        key = _read_key(path)
    except ValueError:
        if not create:
            return None
        key, damaged = None, True
    else:
        if key is not None or not create:
            return key
        damaged = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        try:
            if damaged:
                os.replace(tmp, path)   # replaces a link as a link: its target is not touched
            else:
                os.link(tmp, path)      # the first writer wins; a racing one reads that key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        key = _read_key(path)
    except (OSError, ValueError) as e:
        raise FileAccessError(f"moshi-build's signing key {path} is not a regular 32-byte file and "
                              f"cannot be replaced ({getattr(e, 'strerror', None) or e}): remove it "
                              "(a new key is made; cached wheels are then built again, the index's old files kept)") from None
    if key is None:
        raise FileAccessError(f"moshi-build's signing key {path} could not be made: "
                              "check that its folder is writable")
    return key


def _signature(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def sign(*parts: str) -> str:
    """The signature of `parts` with this user's key (made on first use)."""
    return _signature(_signing_key(create=True), *parts)


def signed_here(signature, *parts: str) -> bool:
    """Whether `signature` (anything read from a file) is this user's signature of `parts`."""
    key = _signing_key(create=False)
    return key is not None and isinstance(signature, str) and hmac.compare_digest(signature, _signature(key, *parts))
