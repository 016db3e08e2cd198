"""Checks before the wheels are uploaded: every file under the index's size limit and, when
twine is installed, `twine check` (the metadata and README the index renders)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from builder.errors import ConfigurationError

# PyPI takes files up to 100 MB unless a project was granted more; 10^6 bytes per MB is
# a little stricter than the index's own MiB.
DEFAULT_MAX_SIZE = "100MB"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'100MB', '95 MiB', '2GB' or a byte count -> bytes."""
    m = re.fullmatch(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*([A-Za-z]{0,3})\s*", str(text)[:64])
    unit = m and m.group(2).upper()
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:   # at most 15 digits: no float overflow
        raise ConfigurationError(f"size {str(text)[:40]!r}: give a number (up to 15 digits) with B, KB, MB, GB, "
                                 "KiB, MiB or GiB, e.g. 100MB")
    return int(float(m.group(1)) * _UNITS[unit])


@dataclasses.dataclass(frozen=True)
class Result:
    wheel: str
    check: str
    ok: bool
    detail: str

    @property
    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.check}: {self.wheel}: {self.detail}"


def twine_available() -> bool:
    return importlib.util.find_spec("twine") is not None


def run_twine(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(path)],
                          capture_output=True, text=True, timeout=300)


def check_wheels(paths: Sequence[Path], max_size: int, *, twine: bool | None = None,
                 run: Callable[[Path], subprocess.CompletedProcess] = run_twine) -> list[Result]:
    """One Result per wheel and check. twine: True requires it, None uses it when installed,
    False skips it."""
    if not paths:
        raise ConfigurationError("no wheels to check")
    use_twine = twine_available() if twine is None else twine
    if twine and not twine_available() and run is run_twine:
        raise ConfigurationError("twine is not installed (pip install twine, or moshi-build's test extra)")
    results = []
    for path in paths:
        path = Path(path)
        size = path.stat().st_size
        results.append(Result(path.name, "size", size <= max_size,
                              f"{size / 1e6:.1f} MB" + (f", within {max_size / 1e6:g} MB" if size <= max_size else
                                                        f", over the {max_size / 1e6:g} MB an index file may have "
                                                        "(--max-size)")))
        if use_twine:
            done = run(path)
            text = " ".join((done.stdout + done.stderr).split())
            detail = "passed" if done.returncode == 0 else (text[-400:] or f"exit {done.returncode}")
            results.append(Result(path.name, "twine", done.returncode == 0, detail))
    return results
