"""Faults around fetching: one writer per cache entry, trust in cached trees, bad mirrors and
--source folders, a lock that cannot be written. Each names the fault in one line."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.common.cache import Cache
from builder.errors import (ChecksumMismatchError, ConfigurationError, DiskFullError, FileAccessError,
                            OfflineError, PatchError)
from builder.sources import fetch as sources
from builder.sources import manifest
from tests.helpers.archives import make_tarball, recipe_for
from tests.helpers.archives import DEMO_RECIPE

REPO = Path(__file__).resolve().parents[2]


def opts(tmp_path, **kw):
    return sources.FetchOptions(cache=Cache(tmp_path / "cache"), progress=False, **kw)


@pytest.fixture
def served(file_server):
    sha = make_tarball(file_server.root / "demo-1.0.tar.gz",
                       {"hello.txt": "hello\n", "LICENSE": "MIT\n", "configure": "#!/bin/sh\necho ok\n"})
    return file_server, sha


def archive_recipe(tmp_path, server, sha, patches=()):
    return recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha},
                      list(patches))


# -- one writer per cache entry --------------------------------------------------------------



def test_two_fetch_processes_share_one_download_not_one_part_file(tmp_path, file_server):
    # 2 MB of random bytes over a slow link (about 0.6 s). Before: both runs wrote one .part;
    # one crashed, and the file stored under the final name could be too long, with the wrong sha256.
    import io
    import tarfile

    path = file_server.root / "demo-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {"LICENSE": b"MIT\n", "blob.bin": os.urandom(2 << 20)}.items():
            info = tarfile.TarInfo(f"demo-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    file_server.chunk_delay = 0.02
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "demo.toml").write_text(DEMO_RECIPE.format(url=f"{file_server.url}/demo-1.0.tar.gz", sha=sha))
    (tmp_path / "patches").mkdir()
    argv = [sys.executable, "-m", "builder", "fetch", "--recipes-dir", str(recipes),
            "--patches-dir", str(tmp_path / "patches"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Both start at once: whichever asks second (the download takes 0.6 s) overlaps the first.
    runs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    assert all("Traceback" not in err for _, err in outs)
    stored = tmp_path / "cache" / "downloads" / sha / "demo-1.0.tar.gz"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha
    assert file_server.requests == ["/demo-1.0.tar.gz"]  # one downloaded; the other waited, then found it
    assert sum("waiting for it to finish" in err for _, err in outs) == 1
    assert not list(stored.parent.glob("*.part"))
    assert len([p for p in (tmp_path / "cache" / "sources").iterdir()]) == 1


def test_a_cache_entry_that_is_a_directory_is_a_corrupted_cache(tmp_path, served):
    server, sha = served
    recipe = archive_recipe(tmp_path, server, sha)
    (tmp_path / "cache" / "downloads" / sha / "demo-1.0.tar.gz").mkdir(parents=True)
    with pytest.raises(ChecksumMismatchError, match="is a directory, not a file: the cache is corrupted"):
        sources.fetch_source(recipe, opts(tmp_path))


# -- trust in cached trees -------------------------------------------------------------------

def fetched_tree(tmp_path, served):
    server, sha = served
    recipe = archive_recipe(tmp_path, server, sha)
    tree = sources.fetch_source(recipe, opts(tmp_path))
    return recipe, tree, tree.path.parent.parent  # tree.path is ENTRY/src/demo-1.0


def test_a_tree_gets_a_manifest_and_passes_unchanged(tmp_path, served):
    recipe, tree, entry = fetched_tree(tmp_path, served)
    recorded = manifest.read(entry)
    assert recorded["src/demo-1.0/hello.txt"][4] == hashlib.sha256(b"hello\n").hexdigest()
    assert recorded["root"] == ["l", "src/demo-1.0"]
    again = sources.fetch_source(recipe, opts(tmp_path, offline=True))
    assert again.path == tree.path


@pytest.mark.parametrize("damage, says", [
    (lambda t: (t / "hello.txt").unlink(), "hello.txt is missing"),
    (lambda t: (t / "configure").open("a").write("echo evil\n"), "configure changed (size"),
    (lambda t: (t / "extra.c").write_text("int x;\n"), "extra.c was added"),
    (lambda t: os.chmod(t / "configure", 0o755), "configure changed mode (644 -> 755)"),
    (lambda t: (t / "hello.txt").write_text("jello\n"), "hello.txt changed (same size, other bytes)"),
])
def test_a_changed_tree_is_exit_4_naming_it_and_the_repair(tmp_path, served, damage, says):
    recipe, tree, entry = fetched_tree(tmp_path, served)
    damage(tree.path)
    with pytest.raises(ChecksumMismatchError) as e:
        sources.fetch_source(recipe, opts(tmp_path, offline=True))
    message = str(e.value)
    assert says in message and str(entry) in message and f"rm -rf {entry}" in message
    assert "from the verified archive" in message and e.value.return_code == 4
    # The repair the message names: delete it, and the next run makes it again.
    import shutil
    shutil.rmtree(entry)
    assert (sources.fetch_source(recipe, opts(tmp_path, offline=True)).path / "hello.txt").read_text() == "hello\n"


def test_a_touched_file_with_the_same_bytes_still_passes_and_is_recorded_again(tmp_path, served):
    recipe, tree, entry = fetched_tree(tmp_path, served)
    os.utime(tree.path / "hello.txt", (1, 1))
    sources.fetch_source(recipe, opts(tmp_path, offline=True))
    assert manifest.read(entry)["src/demo-1.0/hello.txt"][3] == 1_000_000_000


def test_a_tree_of_an_older_version_is_compared_before_it_is_trusted(tmp_path, served):
    recipe, tree, entry = fetched_tree(tmp_path, served)
    (entry / manifest.MANIFEST).unlink()          # as an older moshi-build left it
    sources.fetch_source(recipe, opts(tmp_path, offline=True))
    assert manifest.read(entry) is not None       # same as a fresh extraction: adopted
    (entry / manifest.MANIFEST).unlink()
    (tree.path / "configure").write_text("#!/bin/sh\necho evil\n")
    with pytest.raises(ChecksumMismatchError, match="configure changed"):
        sources.fetch_source(recipe, opts(tmp_path, offline=True))
    assert not [p for p in (tmp_path / "cache" / "sources").iterdir() if p.name.startswith(".")]


def test_links_to_directories_count_in_a_source_folders_hash(tmp_path):
    local = tmp_path / "checkout"
    local.mkdir()
    (local / "hello.txt").write_text("hello\n")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text(name)
    (local / "data").symlink_to(tmp_path / "a")
    before = sources.tree_digest(local)
    (local / "data").unlink()
    (local / "data").symlink_to(tmp_path / "b")
    assert sources.tree_digest(local) != before
    (local / "data").unlink()
    assert sources.tree_digest(local) != before


# -- --source folders --------------------------------------------------------------------------

def git_recipe(tmp_path, patches=()):
    return recipe_for(tmp_path, {"kind": "git", "url": "https://example.invalid/x/demo", "commit": "a" * 40},
                      list(patches))


def test_a_source_folder_holding_a_fifo_is_refused(tmp_path):
    local = tmp_path / "checkout"
    local.mkdir()
    (local / "hello.txt").write_text("hello\n")
    os.mkfifo(local / "pipe")
    with pytest.raises(ConfigurationError, match="holds pipe, which is a FIFO"):
        sources.fetch_source(git_recipe(tmp_path), opts(tmp_path, overrides={"demo": local}, offline=True))


def test_an_empty_source_folder_says_so(tmp_path):
    from tests.sources.test_fetch import write_patch

    empty = tmp_path / "empty"
    empty.mkdir()
    patch = write_patch(tmp_path, "0001-greet.patch", "hello", "hello, world")
    with pytest.raises(ConfigurationError) as e:
        sources.fetch_source(git_recipe(tmp_path, [patch]), opts(tmp_path, overrides={"demo": empty}, offline=True))
    assert "the folder is empty" in str(e.value) and ".tmp" not in str(e.value)


def test_a_patch_that_does_not_apply_names_the_source_not_a_staging_folder(tmp_path, served):
    from tests.sources.test_fetch import write_patch

    server, sha = served
    patch = write_patch(tmp_path, "0001-stale.patch", "goodbye", "hi")
    with pytest.raises(PatchError) as e:
        sources.fetch_source(archive_recipe(tmp_path, server, sha, [patch]), opts(tmp_path))
    assert "the source of demo from http" in str(e.value) and ".tmp" not in str(e.value)


# -- mirrors ---------------------------------------------------------------------------------

def test_a_mirror_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="--mirror .*nonexistent: does not exist"):
        sources.check_mirrors((tmp_path / "nonexistent",))
    with pytest.raises(ConfigurationError, match="MOSHI_BUILD_MIRROR"):
        sources.check_mirrors((), (tmp_path / "nonexistent",))
    assert sources.check_mirrors((tmp_path,)) == (tmp_path.resolve(),)


@pytest.mark.parametrize("make, kind", [(Path.mkdir, "a directory"), (lambda p: os.mkfifo(p), "a FIFO")])
def test_a_mirror_entry_that_is_not_a_file_says_so(tmp_path, served, make, kind):
    server, sha = served
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make(mirror / "demo-1.0.tar.gz")
    with pytest.raises(ConfigurationError, match=f"holds demo-1.0.tar.gz, but it is {kind}"):
        sources.fetch_source(archive_recipe(tmp_path, server, sha), opts(tmp_path, mirrors=(mirror,), offline=True))


def test_an_unreadable_mirror_file_is_a_one_line_error(tmp_path, served, monkeypatch):
    server, sha = served
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    bad = mirror / "demo-1.0.tar.gz"
    bad.write_bytes((server.root / "demo-1.0.tar.gz").read_bytes())
    real = sources.sha256_file

    def unreadable(path):  # the tests run as root, who reads a mode-000 file anyway
        if Path(path) == bad:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(sources, "sha256_file", unreadable)
    with pytest.raises(FileAccessError, match="cannot read the mirrored file .*Permission denied") as e:
        sources.fetch_source(archive_recipe(tmp_path, server, sha), opts(tmp_path, mirrors=(mirror,), offline=True))
    assert e.value.return_code == 15


# -- the lock of what was used -----------------------------------------------------------------

def test_a_full_disk_while_writing_the_lock_leaves_no_temporary_file(tmp_path, served, monkeypatch):
    recipe, tree, _ = fetched_tree(tmp_path, served)
    lock = tmp_path / "cache" / "sources.lock.json"
    sources.write_lock([tree], lock)
    before = lock.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builder.common.files._write_fd", full)
    with pytest.raises(DiskFullError, match="no space left on the device holding .*sources.lock.json") as e:
        sources.write_lock([tree], lock)
    assert e.value.return_code == 12
    assert lock.read_bytes() == before
    assert [p.name for p in lock.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_read_only_cache_cannot_take_the_lock_file(tmp_path, served, monkeypatch):
    recipe, tree, _ = fetched_tree(tmp_path, served)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr("builder.common.files.tempfile.mkstemp", read_only)
    with pytest.raises(FileAccessError, match="sources.lock.json .*Read-only file system"):
        sources.write_lock([tree], tmp_path / "cache" / "sources.lock.json")
    # everything else of a complete read-only cache is read, not written
    assert sources.fetch_source(recipe, opts(tmp_path, offline=True)).path == tree.path


def test_the_offline_error_still_says_offline(tmp_path, served):
    server, sha = served
    with pytest.raises(OfflineError):
        sources.fetch_source(archive_recipe(tmp_path, server, sha), opts(tmp_path, offline=True))


def test_the_lock_is_valid_json(tmp_path, served):
    _, tree, _ = fetched_tree(tmp_path, served)
    sources.write_lock([tree], tmp_path / "lock.json")
    assert json.loads((tmp_path / "lock.json").read_text())["sources"][0]["component"] == "demo"


def test_a_manifest_nested_millions_deep_is_a_damaged_entry(tmp_path):
    # probe C11: manifest.json replaced by 5 MB of nesting; json raised RecursionError
    (tmp_path / manifest.MANIFEST).write_text("[" * 5_000_000)
    assert manifest.read(tmp_path) == {}
