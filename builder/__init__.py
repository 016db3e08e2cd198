"""moshi-build: self-contained ROCm wheels of moshi.cpp, one per gfx target."""

__version__ = "0.1.0"

# tarfile's extraction filters (PEP 706), which every archive fetch relies on, came in 3.11.4.
MIN_PYTHON = (3, 11, 4)
# The exit code of a Python that cannot run moshi-build (docs/EXIT-CODES.md).
WRONG_PYTHON_EXIT = 9


def check_python():
    """Exit with a one-line error on a Python older than MIN_PYTHON, before anything that
    would fail on it is imported (this module imports nothing and parses on any Python 3)."""
    import sys

    have = tuple(sys.version_info[:3])
    if have < MIN_PYTHON:
        sys.stderr.write(
            "moshi-build: error: this is Python %s, but moshi-build needs Python %s or newer "
            "(safe archive extraction); run it with a newer python3 (%s)\n"
            % (".".join(map(str, have)), ".".join(map(str, MIN_PYTHON)), sys.executable)
        )
        raise SystemExit(WRONG_PYTHON_EXIT)
