"""The one way the builder runs a long command: its output appended to a log kept on disk.

Every build step, root creation and wheel tool (mmdebstrap, apt, cmake, make, pip,
auditwheel) goes through run_logged(); a failure is reported by failure() with the
same number of log lines everywhere and the log's path.
"""

from __future__ import annotations

import collections
import contextlib
import shlex
import subprocess
from pathlib import Path
from typing import IO, Callable, Mapping

from builder.errors import BuildStepError, FatalError

LOG_TAIL_LINES = 30


def log_tail(log: Path, n: int = LOG_TAIL_LINES) -> str:
    """The last `n` lines of a log, each ending in a newline."""
    try:
        with open(log, errors="replace") as f:
            lines = collections.deque(f, maxlen=n)
    except OSError:
        return ""
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def failure(what: str, code: int, log: Path, kept: Path | None = None, hint: str = "", context: str = "") -> str:
    """`WHAT failed (exit N)[ CONTEXT]; last 30 lines of the log: ... full log: KEPT[; HINT]`."""
    return (f"{what} failed (exit {code}){' ' + context if context else ''}; last {LOG_TAIL_LINES} lines of the log:\n{log_tail(log)}"
            f"full log: {kept or log}" + (f"; {hint}" if hint else ""))


def _open(log: Path | IO[str]):
    if hasattr(log, "write"):
        return contextlib.nullcontext(log)
    return open(log, "a")


def run_logged(argv: list[str], log: Path | IO[str], *, cwd: Path | None = None,
               env: Mapping[str, str] | None = None, shown: list[str] | None = None,
               on_line: Callable[[str], None] | None = None, stop_timeout: float = 30) -> int:
    """Run `argv` with stdout and stderr appended to `log` (a path or an open text file).

    argv: what runs (already wrapped for an environment, if any); shown: the command
    written to the log instead (the unwrapped one). on_line sees every output line
    (progress bars, echoing). On any exception, Ctrl-C included, the child is
    terminated (killed after stop_timeout seconds) before the exception goes on.
    Returns the exit code."""
    with _open(log) as logf:
        logf.write(f"\n$ {shlex.join(shown or argv)}\n" + (f"(cwd {cwd})\n" if cwd else ""))
        logf.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=cwd, env=dict(env) if env is not None else None,
                                text=True, errors="replace", bufsize=1)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                logf.write(line)
                if on_line is not None:
                    on_line(line)
            return proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            logf.flush()


def check_logged(argv: list[str], log: Path, what: str, *, error: type[FatalError] = BuildStepError,
                 **kwargs) -> None:
    """run_logged(), and `error` with the log's tail if the command fails."""
    code = run_logged(argv, log, **kwargs)
    if code != 0:
        raise error(failure(what, code, log))
