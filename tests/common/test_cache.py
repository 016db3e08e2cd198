"""builder/common/cache.py: entry locks and the sweep of staging folders that killed runs left."""

import os
import time

from builder.common.cache import Cache, staging_dir
from builder.common.files import file_lock


def staging(parent, entry, suffix="abcd1234", age=None):
    folder = parent / f".{entry}.{suffix}.tmp"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "big").write_bytes(b"x" * 4096)
    if age is not None:
        t = time.time() - age
        os.utime(folder, (t, t))
    return folder


def test_the_sweep_removes_old_orphans_and_keeps_fresh_or_locked_ones(tmp_path):
    cache = Cache(tmp_path / "cache")
    old = staging(cache.sources, "demo-0123456789abcdef", age=3600)
    fresh = staging(cache.sources, "demo-fedcba9876543210")           # newer than this process
    held = staging(cache.builds, "step-gfx1100-0123456789abcdef", age=3600)
    git_old = staging(cache.git, "demo-0123456789ab.git", "x_y_z_12", age=3600)
    other = cache.sources / ".not-a-staging-folder"
    other.mkdir()
    os.utime(other, (1, 1))
    entry = cache.sources / "demo-0123456789abcdef"                   # a finished tree is never touched
    entry.mkdir()
    os.utime(entry, (1, 1))
    # Another run still making the build step holds its lock (the lock file build/steps.py uses).
    assert cache.entry_lock(cache.builds / "step-gfx1100-0123456789abcdef") == \
        cache.root / "locks" / "step-gfx1100-0123456789abcdef.lock"
    said = []
    with file_lock(cache.entry_lock(cache.builds / "step-gfx1100-0123456789abcdef")):
        removed = cache.sweep_orphans(echo=said.append)
    assert sorted(removed) == sorted([old, git_old])
    assert not old.exists() and not git_old.exists()
    assert fresh.exists() and held.exists() and other.exists() and entry.exists()
    assert said and "interrupted run" in said[0]


def test_the_sweep_takes_no_folder_of_a_missing_or_read_only_cache(tmp_path, monkeypatch):
    assert Cache(tmp_path / "nothing").sweep_orphans() == []
    assert not (tmp_path / "nothing").exists()
    cache = Cache(tmp_path / "cache")
    old = staging(cache.sources, "demo-0123456789abcdef", age=3600)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("builder.common.files.os.open", read_only)
    assert cache.sweep_orphans() == []
    assert old.exists()


def test_staging_dir_names_match_what_the_sweep_looks_for(tmp_path):
    cache = Cache(tmp_path / "cache")
    final = cache.sources / "demo-0123456789abcdef"
    with staging_dir(final) as tmp:
        t = time.time() - 3600
        os.utime(tmp, (t, t))
        # in use (its lock held by the maker): kept
        with file_lock(cache.entry_lock(final)):
            assert cache.sweep_orphans() == []
        # the maker killed (lock free, folder old): removed
        assert cache.sweep_orphans() == [tmp]
        tmp.mkdir()  # let staging_dir finish
    assert final.exists()
