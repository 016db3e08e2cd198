"""Where moshi-build keeps what it downloads, extracts and builds.

Layout under the cache root:
  downloads/<sha256>/<filename>   verified archives, content-addressed
  git/<repo>-<urlhash>.git        bare repositories holding pinned commits
  sources/<component>-<key>/      extracted, patched source trees
  envs/                           build environments (root filesystems)
  builds/<step>-<key>/            staged install prefixes of build steps
  logs/                           one log per build step run
Everything that appears under these names is complete: work happens in a
temporary sibling and is renamed into place only when finished.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from builder.errors import DiskFullError

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


@contextlib.contextmanager
def staging_dir(final: Path):
    """Yield a temporary directory beside `final`; rename it to `final` on success.

    On any failure (including Ctrl-C) the temporary directory is removed, so a
    later run never mistakes half-done work for a complete entry.
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
