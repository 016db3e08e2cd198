"""One small hierarchy of expected failures.

Each class is a kind of failure with its own exit code. The CLI prints the
message (one line, saying what to do next) and exits with the code; no
traceback is shown for these.
"""

from __future__ import annotations


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
