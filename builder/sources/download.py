"""Fetch one file over HTTP(S), verified against its pinned sha256.

Bytes land in `<dest>.part` first; `dest` appears (by an atomic rename) only
once the whole file hashes to the pinned value. A failed or interrupted
transfer leaves the `.part` behind, and the next attempt (or the next run)
resumes it with a Range request.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
import urllib3
from tqdm import tqdm

from builder.errors import ChecksumMismatchError, DiskFullError, DownloadError

CHUNK = 1 << 16
# The most a download may bring when the recipe pins no size: beyond it the transfer stops and
# the partial file is deleted (a server sending without end, a file: URL naming /dev/zero).
MAX_DOWNLOAD = 4 << 30
_RETRY_STATUS = {408, 429}  # and every 5xx
_WHAT_TO_DO = "check the network connection and proxy settings, or put the file in a --mirror directory"


class _Retry(Exception):
    """A failure worth another attempt; the message says what happened."""


class _TooLarge(Exception):
    """More bytes arrived than the limit: not worth another attempt."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def download(
    url: str,
    dest: Path,
    *,
    sha256: str,
    size: int | None = None,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 1.0,
    progress: bool = True,
    description: str | None = None,
    session: requests.Session | None = None,
    max_size: int = MAX_DOWNLOAD,
) -> Path:
    """Download `url` to `dest` unless its sha256 differs; return `dest`.

    `retries` is how many more attempts follow a failed one; attempt n+1 waits
    `backoff * 2**n` seconds. `size`, when known, lets a complete `.part` be
    verified without asking the server. A transfer bringing more than `size` (when known) or
    `max_size` bytes is stopped, its partial file deleted, and DownloadError raised.
    """
    dest = Path(dest)
    part = dest.parent / (dest.name + ".part")
    expected = sha256.lower()
    limit = min(size, max_size) if size is not None else max_size
    fetch = dict(url=url, part=part, size=size, limit=limit, timeout=timeout, retries=retries, backoff=backoff,
                 bar=dict(desc=description or dest.name, disable=None if progress else True))
    own_session = session is None
    session = session or requests.Session()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        actual, pieced = _fetch(session, **fetch)
        if actual != expected and pieced:
            # Bytes joined from several transfers may not belong together (an old
            # partial was corrupt, or the file changed between transfers): one
            # clean transfer tells a bad join from a real mismatch.
            part.unlink()
            actual, _ = _fetch(session, **fetch)
    except _TooLarge as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{_safe(url)} ({dest.name}): more than {e.limit:,} bytes arrived "
                            f"{'(the size the recipe pins)' if e.limit == size else '(the most a download may bring)'}; "
                            "the partial file is deleted; check the URL in the recipe") from None
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise DiskFullError(
            f"no space left on the device holding {dest.parent} while downloading {dest.name}; "
            f"free some space and run again: the partial download is kept and will resume"
        ) from None
    finally:
        if own_session:
            session.close()

    if actual != expected:
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{_safe(url)} ({dest.name}): expected sha256 {expected}, got {actual}; the upstream file "
            "changed or the transfer was corrupted; re-check the recipe's sha256"
        )
    os.replace(part, dest)
    return dest


def _fetch(session, *, url, part, size, limit, timeout, retries, backoff, bar) -> tuple[str, bool]:
    """Bring `part` to the end of the file; return (its sha256, whether it was resumed)."""
    if urlsplit(url).scheme == "file":
        return _copy_local(url, part, bar, limit), False
    problem = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            return _attempt(session, url, part, size=size, limit=limit, timeout=timeout, bar=bar)
        except _Retry as e:
            problem = str(e)
        except (requests.ConnectionError, requests.Timeout) as e:
            if "certificate verify failed" in str(e).lower():
                # Retrying will not fix a certificate problem (other TLS hiccups may pass).
                raise DownloadError(
                    f"cannot download {_safe(url)}: the TLS certificate check failed; check the system's "
                    "CA certificates (or pip's `cert` setting), or put the file in a --mirror directory"
                ) from None
            problem = _reason(e, timeout)
        except requests.RequestException as e:
            raise DownloadError(f"cannot download {_safe(url)}: {_one_line(e)}; check the URL in the recipe") from None
    raise DownloadError(
        f"could not download {_safe(url)} in {retries + 1} attempts (last: {problem}); {_WHAT_TO_DO}"
    )


def _attempt(session, url, part, *, size, limit, timeout, bar) -> tuple[str, bool]:
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    hasher = _hash_prefix(part, offset)
    if offset and offset == size:
        return hasher.hexdigest(), True

    # Ask for the bytes as stored: those are what the sha256 pins.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        status = r.status_code
        if status == 416 and offset:
            m = re.fullmatch(r"bytes \*/(\d+)", r.headers.get("Content-Range", "").strip())
            if m and int(m.group(1)) == offset:
                return hasher.hexdigest(), True  # the partial is already the whole file
        elif status >= 500 or status in _RETRY_STATUS:
            raise _Retry(f"HTTP {status} {r.reason}")
        elif status not in (200, 206):
            raise DownloadError(
                f"cannot download {_safe(url)}: HTTP {status} {r.reason}; check the URL in the recipe, "
                "or put the file in a --mirror directory"
            )
        else:
            if status == 206:
                m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", "").strip())
                if m and int(m.group(1)) != offset:
                    part.unlink(missing_ok=True)
                    raise _Retry(f"the server resumed at byte {m.group(1)} instead of {offset}")
            else:
                offset, hasher = 0, hashlib.sha256()  # a full answer (Range ignored): start over
            return _receive(r, part, offset, hasher, size, limit, bar), offset > 0

    # 416 without a usable total: the partial does not fit this file.
    part.unlink()
    return _attempt(session, url, part, size=size, limit=limit, timeout=timeout, bar=bar)


def _receive(r, part, offset, hasher, size, limit, bar) -> str:
    length = r.headers.get("Content-Length", "")
    total = offset + int(length) if length.isascii() and length.isdigit() else size
    if total is not None and total > limit:
        raise _TooLarge(limit)
    received = offset
    with open(part, "ab" if offset else "wb") as f, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, **bar
    ) as progress:
        try:
            # The raw stream, undecoded: a gzip Content-Encoding must not be unpacked.
            for chunk in r.raw.stream(CHUNK, decode_content=False):
                received += len(chunk)
                if received > limit:
                    raise _TooLarge(limit)
                f.write(chunk)
                hasher.update(chunk)
                progress.update(len(chunk))
        except (urllib3.exceptions.HTTPError, requests.RequestException) as e:
            raise _Retry(f"{_reason(e, None)} after {received} of {total or '?'} bytes") from None
    if length.isascii() and length.isdigit() and received < total:
        raise _Retry(f"the connection closed after {received} of {total} bytes")
    return hasher.hexdigest()


def _copy_local(url, part, bar, limit) -> str:
    # A `file:` URL (a local package index): no network, nothing to resume. Only a regular
    # file is read (a FIFO would block, a device would not end): stat first, never open it.
    src = Path(url2pathname(urlsplit(url).path))
    hasher = hashlib.sha256()
    try:
        if not stat.S_ISREG(src.stat().st_mode):
            raise DownloadError(f"cannot read {_safe(url)}: not a regular file; check the index or the recipe's URL")
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as s, open(part, "wb") as f, tqdm(
            total=os.fstat(fd).st_size, unit="B", unit_scale=True, unit_divisor=1024, **bar
        ) as progress:
            copied = 0
            while chunk := s.read(CHUNK):
                copied += len(chunk)
                if copied > limit:
                    raise _TooLarge(limit)
                f.write(chunk)
                hasher.update(chunk)
                progress.update(len(chunk))
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as e:
        raise DownloadError(f"cannot read {_safe(url)}: {e.strerror}; check the index or the recipe's URL") from None
    return hasher.hexdigest()


def _hash_prefix(part: Path, length: int):
    """A sha256 already fed with the partial's bytes, ready to take the rest."""
    h = hashlib.sha256()
    if length:
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h


def _reason(e: Exception, timeout: float | None) -> str:
    if isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out" + (f" after {timeout:g} s" if timeout else "")
    if isinstance(e, (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError)):
        return "the connection broke"
    # requests nests the OS error deep in its text; that part is what a user can act on.
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(e))
    return m.group(1).strip() if m else _one_line(e)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _safe(url: str) -> str:
    """The URL without credentials, for messages."""
    p = urlsplit(url)
    return p._replace(netloc=p.netloc.rpartition("@")[2]).geturl() if "@" in p.netloc else url
