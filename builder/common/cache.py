"""Where moshi-build keeps what it downloads, extracts and builds.

Layout under the cache root:
  downloads/<sha256>/<filename>   verified archives, content-addressed
  git/<repo>-<urlhash>.git        bare repositories holding pinned commits
  sources/<component>-<key>/      extracted, patched source trees
  envs/                           build environments (root filesystems)
  builds/<step>-<key>/            staged install prefixes of build steps
  wheels/<dist>-<key>/            verified wheels and what they were made of (package/wheel_cache.py)
  logs/                           one log per build step run
  locks/                          one lock file per entry being made (entry_lock)
Everything that appears under these names is complete: work happens in a
temporary sibling (.NAME.XXXXXXXX.tmp) and is renamed into place only when
finished. One process at a time makes an entry: it holds the entry's lock
while its staging folder exists. A staging folder that a killed run left
behind (SIGKILL, a power cut) is removed by the next run's sweep_orphans(),
under the same lock, if it is older than that run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import platformdirs

from builder.common.files import file_lock
from builder.errors import DiskFullError

# When this process started (close enough: when the cache module was imported). A staging
# folder older than this, whose lock is free, belongs to no running moshi-build.
PROCESS_START = time.time()
# staging_dir's names: "." + the entry's name + "." + mkdtemp's 8 random characters + ".tmp"
_STAGING = re.compile(r"^\.(?P<entry>.+)\.[a-z0-9_]{8}\.tmp$")
# Areas whose entries are made in staging folders under entry_lock().
SWEPT_AREAS = ("sources", "git", "builds", "wheels")

CACHE_DIR_ENV = "MOSHI_BUILD_CACHE_DIR"


def default_cache_root() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("moshi-build")).resolve()


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_cache_root()).resolve()

    def dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def downloads(self) -> Path:
        return self.dir("downloads")

    @property
    def sources(self) -> Path:
        return self.dir("sources")

    @property
    def git(self) -> Path:
        return self.dir("git")

    @property
    def envs(self) -> Path:
        return self.dir("envs")

    @property
    def builds(self) -> Path:
        return self.dir("builds")

    @property
    def logs(self) -> Path:
        return self.dir("logs")

    def download_path(self, sha256: str, filename: str) -> Path:
        return self.downloads / sha256 / filename

    def entry_lock(self, final: Path) -> Path:
        """The lock file held by the one process making the cache entry `final`
        (downloads/<sha256>, sources/<tree>, git/<repo>, builds/<step>), and taken by the
        sweep before it removes that entry's leftover staging folders."""
        area = Path(final).parent.name
        if area == "builds":  # the names build/steps.py has always used
            return self.root / "locks" / f"{Path(final).name}.lock"
        return self.root / "locks" / area / f"{Path(final).name}.lock"

    def sweep_orphans(self, older_than: float | None = None,
                      echo: Callable[[str], None] | None = None) -> list[Path]:
        """Remove staging folders that interrupted runs left under sources/, git/ and builds/.

        A folder is removed only if it is older than `older_than` (default: this process's
        start) and its entry's lock is free, taken without waiting: a run still making the
        entry holds it. Best effort: a read-only or unreadable cache is left as it is.
        Returns the folders removed."""
        older_than = PROCESS_START if older_than is None else older_than
        removed: list[Path] = []
        for area in SWEPT_AREAS:
            folder = self.root / area
            try:
                children = sorted(folder.iterdir()) if folder.is_dir() else []
            except OSError:
                continue
            for child in children:
                m = _STAGING.match(child.name)
                if m is None:
                    continue
                try:
                    if not child.is_dir() or child.is_symlink() or child.lstat().st_mtime >= older_than:
                        continue
                    with file_lock(self.entry_lock(folder / m["entry"])):
                        if child.is_dir():
                            shutil.rmtree(child)
                            removed.append(child)
                except (BlockingIOError, OSError):
                    continue  # being made right now, or a cache we may not write
        if removed and echo is not None:
            echo(f"removed {len(removed)} unfinished folder(s) that an interrupted run left in {self.root}")
        return removed


@contextlib.contextmanager
def staging_dir(final: Path):
    """Yield a temporary directory beside `final`; rename it to `final` on success.

    On any failure (including Ctrl-C) the temporary directory is removed, so a
    later run never mistakes half-done work for a complete entry. The caller holds
    Cache.entry_lock(final) around it: the lock tells a sweep that the folder is in use.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            # Someone else finished the same work first; theirs is as good as ours.
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def disk_full_as_error(where: Path):
    """Turn ENOSPC into a one-line DiskFullError that names the place."""
    try:
        yield
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(
                f"no space left on the device holding {where}; free some space "
                "(or point --cache-dir elsewhere) and run again: finished work is kept"
            ) from None
        raise
