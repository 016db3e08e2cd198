"""Mounting and unmounting for the chroot sessions, and deleting trees that may hold mounts.

Everything here works on absolute paths and the mount table of this process'
namespace (/proc/self/mountinfo). Set-up and tear-down run with SIGINT and
SIGTERM held back, so a Ctrl-C cannot leave half of a mount set behind: the
signal is delivered (as KeyboardInterrupt) right after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from builder.errors import ToolchainError

MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Every mount point of this namespace, in mount order."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return []
    return [Path(_unescape(line.split()[4])) for line in lines if len(line.split()) > 4]


def mounts_under(root: Path, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Mount points at or below `root`, deepest / newest last (unmount in reverse)."""
    root = Path(os.path.abspath(root))
    found = []
    for mp in mount_points(mountinfo):
        if mp == root or root in mp.parents:
            found.append(mp)
    return found


def is_mount_point(path: Path, mountinfo: Path = MOUNTINFO) -> bool:
    path = Path(os.path.abspath(path))
    return path in mount_points(mountinfo)


@contextlib.contextmanager
def signals_held():
    """Hold back SIGINT/SIGTERM in this block; one that came meanwhile is re-raised at its end.

    Two layers: the Python handlers are swapped for ones that only note the signal
    (a process-directed signal may land on any thread, e.g. tqdm's monitor, and
    still interrupt the main thread), and the signals are blocked in this thread
    so that the short mount/umount children it starts inherit the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def note(signum, frame):
        pending.append(signum)

    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, note) for s in held}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(held))
    try:
        yield
    finally:
        # Unblocking delivers pending signals, and pthread_sigmask runs the Python
        # handlers (note) before it returns. SIGINT's own handler goes back last, so
        # a Ctrl-C in between is still noted rather than lost.
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for s in reversed(held):
            signal.signal(s, previous[s])
        if pending:
            signal.raise_signal(pending[0])  # as if it came now: KeyboardInterrupt for SIGINT


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)


def mount_proc(target: Path) -> None:
    r = _run(["mount", "-t", "proc", "proc", str(target)])
    if r.returncode != 0:
        raise ToolchainError(f"cannot mount proc at {target}: {r.stderr.strip()} (the debian environment needs root)")


def bind_mount(source: Path, target: Path) -> None:
    r = _run(["mount", "--bind", str(source), str(target)])
    if r.returncode != 0:
        raise ToolchainError(f"cannot bind-mount {source} at {target}: {r.stderr.strip()} (the debian environment needs root)")


def unmount(target: Path, attempts: int = 5) -> None:
    """Unmount one mount point; wait a little if busy, then detach it lazily."""
    for i in range(attempts):
        r = _run(["umount", str(target)])
        if r.returncode == 0 or not is_mount_point(target):
            return
        time.sleep(0.2 * (i + 1))
    r = _run(["umount", "--lazy", str(target)])
    if r.returncode != 0 and is_mount_point(target):
        raise ToolchainError(f"cannot unmount {target}: {r.stderr.strip()}; unmount it by hand (umount -l {target})")


def unmount_all_under(root: Path) -> list[Path]:
    """Unmount everything at or below `root`, newest first. Returns what was unmounted."""
    done = []
    for _ in range(3):  # stacked mounts show up once per layer
        found = mounts_under(root)
        if not found:
            break
        for mp in reversed(found):
            unmount(mp)
            done.append(mp)
    left = mounts_under(root)
    if left:
        raise ToolchainError(
            f"still mounted below {root}: {', '.join(map(str, left))}; unmount by hand (umount -l PATH)"
        )
    return done


def safe_rmtree(path: Path) -> None:
    """Delete a tree that may contain mount points (a root filesystem): unmount first, never follow mounts."""
    path = Path(os.path.abspath(path))
    if not path.exists() and not path.is_symlink():
        return
    with signals_held():
        unmount_all_under(path)
    # A bind mount appearing meanwhile would be on another device or the same one;
    # either way rmtree does not follow symlinks, and mounts were just checked.
    shutil.rmtree(path)
