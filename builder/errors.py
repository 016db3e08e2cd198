"""One small hierarchy of expected failures.

Each class is a kind of failure with its own exit code. The CLI prints the
message (one line, saying what to do next) and exits with the code; no
traceback is shown for these.
"""

from __future__ import annotations

import errno
import re

# A value echoed in a message is cut to about this many characters (an argument can be 128 KiB).
SHOWN_CHARS = 200


def shorten(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` as text, cut to `limit` characters with an ellipsis and its full length."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def shorten_runs(message: str, limit: int = SHOWN_CHARS) -> str:
    """`message` with every run of more than 2 * `limit` non-blank characters shortened:
    the last guard before a message is printed, whatever value it echoes."""
    return re.sub(r"\S{%d,}" % (2 * limit + 1), lambda m: shorten(m.group(0), limit), message)


class FatalError(Exception):
    """Base class: an expected failure that ends the run."""

    return_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(FatalError):
    """Bad command-line input: unknown component, malformed --source, etc."""

    return_code = 2


class RecipeError(FatalError):
    """A recipe file does not load or does not validate."""

    return_code = 3


class ChecksumMismatchError(FatalError):
    """Downloaded, mirrored or cached bytes do not hash to the pinned sha256."""

    return_code = 4


class DownloadError(FatalError):
    """A network transfer failed after its retries."""

    return_code = 5


class OfflineError(FatalError):
    """--offline is set and something needed the network."""

    return_code = 6


class UnsafeArchiveError(FatalError):
    """An archive member would land outside the extraction directory."""

    return_code = 7


class PatchError(FatalError):
    """A patch no longer applies, or its file does not match its sha256."""

    return_code = 8


class ToolchainError(FatalError):
    """The build environment (toolchain, root filesystem) is missing or unusable."""

    return_code = 9


class TargetError(FatalError):
    """An unknown gfx target, or one the environment cannot build or run."""

    return_code = 10


class BuildStepError(FatalError):
    """A build step (configure, compile, install) failed; see its log."""

    return_code = 11


class DiskFullError(FatalError):
    """No space left on a device the build writes to."""

    return_code = 12


class WheelVerificationError(FatalError):
    """A built wheel fails `moshi-build verify` (missing library, foreign kernels, build paths...)."""

    return_code = 13


class InterruptedByUser(FatalError):
    """Ctrl-C: work in progress was discarded, caches were left consistent."""

    return_code = 130


class PinnedPackageError(FatalError):
    """A ROCm stack pins a Debian package version the archive no longer serves."""

    return_code = 14


class FileAccessError(FatalError):
    """A file or folder cannot be read or written: permissions, a read-only file system,
    a directory where a file belongs (or the other way round), a path that cannot exist."""

    return_code = 15


class NotAWheelError(FatalError):
    """A file given as a wheel is not one: not a zip archive, a damaged or truncated one,
    a directory, or a name that is not a wheel file name."""

    return_code = 16


class NotReproducibleError(FatalError):
    """Two builds of the same wheel from the same inputs gave different bytes."""

    return_code = 17


# errno values of the file system that a user can cause (and fix); ENOSPC and EDQUOT are DiskFullError.
FILE_SYSTEM_ERRNOS = frozenset({
    errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.ELOOP,
    errno.ENAMETOOLONG, errno.ETXTBSY, errno.EEXIST, errno.ENOTEMPTY, errno.EXDEV, errno.EBUSY,
    errno.EMLINK, errno.EFBIG, errno.EIO,
})
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def from_os_error(e: OSError, doing: str | None = None) -> FatalError | None:
    """The one-line error for an OSError of the file system, or None if `e` is not one.

    `doing` says what was being done ("writing the lock"); the file comes from the error."""
    where = e.filename if e.filename is not None else None
    target = f" {shorten(where)}" if where is not None else ""
    if e.filename2 is not None:
        target += f" -> {shorten(e.filename2)}"
    what = f" while {doing}" if doing else ""
    if e.errno in DISK_FULL_ERRNOS:
        return DiskFullError(
            f"no space left on the device holding{target or ' a file'}{what}; free some space "
            "(or point --cache-dir or --out elsewhere) and run again: finished work is kept"
        )
    if e.errno in FILE_SYSTEM_ERRNOS and (where is not None or doing):
        reason = e.strerror or os_error_name(e)
        advice = {
            errno.EROFS: "it is on a read-only file system: choose a writable place (--cache-dir, --out, --lock)",
            errno.EACCES: "check its permissions and owner, or choose another place (--cache-dir, --out, --lock)",
            errno.EPERM: "check its permissions and owner, or choose another place (--cache-dir, --out, --lock)",
            errno.EISDIR: "a directory is where a file belongs: move it away or name another path",
            errno.ENOTDIR: "a file is where a directory belongs: move it away or name another path",
            errno.ENOENT: "a folder on the way does not exist or cannot be created there",
        }.get(e.errno, "check the path and run again")
        return FileAccessError(f"cannot access{target or ' a file'}{what}: {reason}; {advice}")
    return None


def os_error_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__
