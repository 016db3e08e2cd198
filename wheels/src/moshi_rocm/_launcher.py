"""Runs the native tools shipped in this package.

Each console script (moshi-tts, ...) ends in exec_tool(): the Python process
is replaced by the tool with os.execve, so arguments, stdin/stdout/stderr,
signals and the exit status are the tool's own. Only two things change on the
way: the environment gets what the bundled ROCm runtime needs (read from
_runtime.json, written when the wheel was built), and "-d HIP<N>" is accepted
as an alias of ggml's device name "ROCm<N>".

This file is part of the wheel template: keep it importable on Python 3.8.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

PACKAGE_DIR = Path(__file__).resolve().parent
RUNTIME_FILE = "_runtime.json"
# Python ignores these; an ignored signal stays ignored across exec, so the tool
# would see EPIPE instead of dying quietly when its reader goes away.
_RESET_SIGNALS = ("SIGPIPE", "SIGXFSZ")


class LauncherError(Exception):
    """The tool cannot be started (broken installation, unknown tool)."""


def runtime_info(package_dir: Path = PACKAGE_DIR) -> dict:
    path = Path(package_dir) / RUNTIME_FILE
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LauncherError(f"{path} is missing: the installation is incomplete; reinstall the wheel") from None
    except ValueError as e:
        raise LauncherError(f"{path} is not valid JSON ({e}); reinstall the wheel") from None


def alias_device(name: str, aliases: Iterable[Sequence[str]]) -> str:
    """HIP0 -> ROCm0 (case-insensitive prefix, index kept); anything else unchanged."""
    for alias, real in aliases:
        m = re.fullmatch(re.escape(alias) + r"([0-9]+)", name, flags=re.IGNORECASE)
        if m:
            return real + m.group(1)
    return name


def rewrite_device_args(args: Sequence[str], flags: Iterable[str] = ("-d", "--device"),
                        aliases: Iterable[Sequence[str]] = (("HIP", "ROCm"),)) -> List[str]:
    """Rewrite the value after a device flag the way the tools read it (flag, then value)."""
    flags = tuple(flags)
    aliases = tuple(tuple(a) for a in aliases)
    out: List[str] = []
    i = 0
    while i < len(args):
        out.append(args[i])
        if args[i] in flags and i + 1 < len(args):
            out.append(alias_device(args[i + 1], aliases))
            i += 2
            continue
        i += 1
    return out


def tool_environment(info: Mapping, base_env: Mapping[str, str], package_dir: Path = PACKAGE_DIR) -> Dict[str, str]:
    """The environment the tool runs with.

    Variables listed under "env" point at folders of the package (e.g.
    ROCBLAS_TENSILE_LIBPATH -> the bundled rocBLAS kernels) and always win: a
    value meant for another ROCm installation would not match the bundled
    rocBLAS. LD_LIBRARY_PATH is left alone when unset (RUNPATHs find
    everything); when set, the package's library folders go first, so a
    system ROCm listed there cannot replace a bundled library.
    """
    env = dict(base_env)
    for var, rel in info.get("env", {}).items():
        env[var] = str(Path(package_dir) / rel)
    current = env.get("LD_LIBRARY_PATH", "")
    if current:
        ours = [os.path.normpath(str(Path(package_dir) / d)) for d in info.get("library_dirs", [])]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(ours + [current])
    return env


def tool_path(tool: str, info: Mapping, package_dir: Path = PACKAGE_DIR) -> Path:
    if tool not in info.get("tools", []):
        known = ", ".join(info.get("tools", [])) or "none"
        raise LauncherError(f"unknown tool {tool!r}; this package has: {known}")
    exe = Path(package_dir) / info["bin_dir"] / tool
    if not os.access(str(exe), os.X_OK):
        raise LauncherError(f"{exe} is missing or not executable: the installation is broken; reinstall the wheel")
    return exe


def prepare(tool: str, args: Sequence[str], base_env: Optional[Mapping[str, str]] = None,
            package_dir: Path = PACKAGE_DIR) -> Tuple[Path, List[str], Dict[str, str]]:
    """(executable, argv, env) for running `tool` with `args`: what exec_tool() passes to execve."""
    info = runtime_info(package_dir)
    exe = tool_path(tool, info, package_dir)
    launcher = info.get("launcher", {})
    argv = [str(exe)] + rewrite_device_args(
        list(args), launcher.get("device_flags", ()), launcher.get("device_aliases", ()))
    env = tool_environment(info, os.environ if base_env is None else base_env, package_dir)
    return exe, argv, env


def exec_tool(tool: str, args: Sequence[str], package_dir: Path = PACKAGE_DIR) -> "NoReturn":  # type: ignore[name-defined]
    """Replace this process with the tool. argv[0] is the tool's real path:
    the tools find their *-config.json files next to argv[0]."""
    exe, argv, env = prepare(tool, args, package_dir=package_dir)
    for name in _RESET_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    os.execve(str(exe), argv, env)
    raise AssertionError("os.execve returned")  # pragma: no cover


def console_entry(tool: str) -> Callable[[], int]:
    """The callable a console script runs: exec the tool, or explain why not."""

    def run() -> int:
        try:
            exec_tool(tool, sys.argv[1:])
        except LauncherError as e:
            print(f"{tool}: {e}", file=sys.stderr)
            return 127
        except OSError as e:
            print(f"{tool}: cannot run {e.filename or tool}: {e.strerror}", file=sys.stderr)
            return 126
        return 0  # pragma: no cover (exec does not return)

    run.__name__ = run.__qualname__ = tool
    return run
