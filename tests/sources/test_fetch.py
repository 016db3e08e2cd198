import hashlib
import subprocess
from pathlib import Path

import pytest

from builder.common.cache import Cache
from builder.errors import ChecksumMismatchError, ConfigurationError, OfflineError, PatchError
from builder.sources import fetch as sources
from tests.helpers.archives import flip_byte, make_tarball, recipe_for


def write_patch(tmp_path: Path, name: str, old: str, new: str, component: str = "demo") -> dict:
    d = tmp_path / "patches" / component
    d.mkdir(parents=True, exist_ok=True)
    text = (
        "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n"
        f"-{old}\n+{new}\n"
    )
    (d / name).write_text(text)
    return {"file": name, "sha256": hashlib.sha256(text.encode()).hexdigest()}


@pytest.fixture
def served_archive(file_server):
    sha = make_tarball(file_server.root / "demo-1.0.tar.gz", {"hello.txt": "hello\n", "LICENSE": "MIT\n"})
    return file_server, sha


def opts(tmp_path, **kw):
    return sources.FetchOptions(cache=Cache(tmp_path / "cache"), progress=False, **kw)


def test_fetch_from_network_then_cache_hit_offline(tmp_path, served_archive):
    server, sha = served_archive
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha})
    tree = sources.fetch_source(recipe, opts(tmp_path))
    assert (tree.path / "hello.txt").read_text() == "hello\n"
    assert tree.verified and tree.pin == sha
    assert server.requests == ["/demo-1.0.tar.gz"]
    # Nothing changed: a second fetch makes no request at all, even forbidden to.
    again = sources.fetch_source(recipe, opts(tmp_path, offline=True))
    assert again.path == tree.path and again.origin == "cache"
    assert server.requests == ["/demo-1.0.tar.gz"]


def test_patches_are_applied_and_change_the_tree_key(tmp_path, served_archive):
    server, sha = served_archive
    src = {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha}
    plain = sources.fetch_source(recipe_for(tmp_path, src), opts(tmp_path))
    patched = sources.fetch_source(
        recipe_for(tmp_path, src, [write_patch(tmp_path, "0001-greet.patch", "hello", "hello, world")]),
        opts(tmp_path),
    )
    assert patched.key != plain.key
    assert (patched.path / "hello.txt").read_text() == "hello, world\n"
    assert (plain.path / "hello.txt").read_text() == "hello\n"


def test_patch_that_no_longer_applies_leaves_no_tree(tmp_path, served_archive):
    server, sha = served_archive
    src = {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha}
    recipe = recipe_for(tmp_path, src, [write_patch(tmp_path, "0001-stale.patch", "goodbye", "hi")])
    with pytest.raises(PatchError, match="0001-stale.patch"):
        sources.fetch_source(recipe, opts(tmp_path))
    assert list((tmp_path / "cache" / "sources").iterdir()) == []
    # The verified download stays cached for the next attempt.
    assert (tmp_path / "cache" / "downloads" / sha / "demo-1.0.tar.gz").exists()


def test_mirror_is_used_before_the_network(tmp_path, served_archive):
    server, sha = served_archive
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo-1.0.tar.gz").write_bytes((server.root / "demo-1.0.tar.gz").read_bytes())
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha})
    tree = sources.fetch_source(recipe, opts(tmp_path, mirrors=(mirror,), offline=True))
    assert tree.origin.startswith("mirror ") and server.requests == []


def test_a_bad_copy_in_a_mirror_names_file_and_hashes_and_the_next_source_is_tried(tmp_path, served_archive, capsys):
    """Issue 24, item 14: a bad copy in the first mirror no longer stops the fetch."""
    server, sha = served_archive
    mirror, good_mirror = tmp_path / "mirror", tmp_path / "mirror2"
    mirror.mkdir()
    good_mirror.mkdir()
    bad = mirror / "demo-1.0.tar.gz"
    bad.write_bytes((server.root / "demo-1.0.tar.gz").read_bytes())
    flip_byte(bad)
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha})
    # offline, no other copy: the bad copy's error, naming the file and both hashes
    with pytest.raises(ChecksumMismatchError) as e:
        sources.fetch_source(recipe, opts(tmp_path, mirrors=(mirror,), offline=True))
    assert str(bad) in str(e.value) and sha in str(e.value) and actual in str(e.value)
    assert not (tmp_path / "cache" / "downloads" / sha).exists()
    # a second mirror with a good copy is used, and the bad one is named
    (good_mirror / "demo-1.0.tar.gz").write_bytes((server.root / "demo-1.0.tar.gz").read_bytes())
    tree = sources.fetch_source(recipe, opts(tmp_path, mirrors=(mirror, good_mirror), offline=True))
    assert tree.origin == f"mirror {good_mirror / 'demo-1.0.tar.gz'}"
    assert f"warning: mirrored file {bad} has sha256 {actual}" in capsys.readouterr().err


def test_a_bad_mirror_copy_falls_back_to_the_network(tmp_path, served_archive):
    server, sha = served_archive
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo-1.0.tar.gz").write_bytes(b"not the archive")
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha})
    tree = sources.fetch_source(recipe, opts(tmp_path, mirrors=(mirror,)))
    assert not tree.origin.startswith("mirror") and server.requests


def test_flipped_byte_in_cache_fails_and_leaves_the_rest_intact(tmp_path, file_server):
    sha_a = make_tarball(file_server.root / "a-1.0.tar.gz", {"hello.txt": "a\n"}, "a-1.0")
    sha_b = make_tarball(file_server.root / "b-1.0.tar.gz", {"hello.txt": "b\n"}, "b-1.0")
    ra = recipe_for(tmp_path, {"kind": "archive", "url": f"{file_server.url}/a-1.0.tar.gz", "sha256": sha_a}, name="a")
    rb = recipe_for(tmp_path, {"kind": "archive", "url": f"{file_server.url}/b-1.0.tar.gz", "sha256": sha_b}, name="b")
    sources.fetch_all([ra, rb], opts(tmp_path))
    cached_a = tmp_path / "cache" / "downloads" / sha_a / "a-1.0.tar.gz"
    cached_b = tmp_path / "cache" / "downloads" / sha_b / "b-1.0.tar.gz"
    before_b = cached_b.read_bytes()
    flip_byte(cached_a)
    with pytest.raises(ChecksumMismatchError) as e:
        sources.fetch_all([ra, rb], opts(tmp_path, offline=True))
    assert str(cached_a) in str(e.value) and sha_a in str(e.value)
    assert cached_a.exists() and cached_b.read_bytes() == before_b
    assert len(list((tmp_path / "cache" / "sources").iterdir())) == 2


def test_offline_without_cache_or_mirror_is_an_error(tmp_path, served_archive):
    server, sha = served_archive
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha})
    with pytest.raises(OfflineError, match="--offline"):
        sources.fetch_source(recipe, opts(tmp_path, offline=True))
    assert server.requests == []


def test_pypi_sdist_found_through_pips_configured_index(tmp_path, file_server, monkeypatch):
    sha = make_tarball(file_server.root / "demo-1.0.tar.gz", {"hello.txt": "hi\n"})
    page = file_server.root / "simple" / "demo"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text(
        f'<html><body><a href="../../demo-1.0.tar.gz#sha256={sha}">demo-1.0.tar.gz</a></body></html>'
    )
    monkeypatch.setenv("PIP_INDEX_URL", f"{file_server.url}/simple/")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    recipe = recipe_for(tmp_path, {"kind": "pypi", "package": "demo", "version": "1.0",
                                   "filename": "demo-1.0.tar.gz", "sha256": sha})
    tree = sources.fetch_source(recipe, opts(tmp_path))
    assert (tree.path / "hello.txt").read_text() == "hi\n"
    assert "/demo-1.0.tar.gz" in file_server.requests


def test_pypi_index_advertising_another_hash_is_refused(tmp_path, file_server, monkeypatch):
    sha = make_tarball(file_server.root / "demo-1.0.tar.gz", {"hello.txt": "hi\n"})
    page = file_server.root / "simple" / "demo"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text(f'<a href="../../demo-1.0.tar.gz#sha256={"0" * 64}">demo-1.0.tar.gz</a>')
    monkeypatch.setenv("PIP_INDEX_URL", f"{file_server.url}/simple/")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    recipe = recipe_for(tmp_path, {"kind": "pypi", "package": "demo", "version": "1.0",
                                   "filename": "demo-1.0.tar.gz", "sha256": sha})
    with pytest.raises(ChecksumMismatchError, match="the index serves"):
        sources.fetch_source(recipe, opts(tmp_path))


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_git_source_from_mirror_pinned_commit(tmp_path):
    upstream = tmp_path / "mirror" / "demo.git"
    upstream.mkdir(parents=True)
    git("init", "-q", cwd=upstream)
    (upstream / "hello.txt").write_text("v1\n")
    git("add", ".", cwd=upstream)
    git("commit", "-qm", "v1", cwd=upstream)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=upstream, capture_output=True, text=True).stdout.strip()
    (upstream / "hello.txt").write_text("v2\n")
    git("commit", "-qam", "v2", cwd=upstream)
    recipe = recipe_for(tmp_path, {"kind": "git", "url": "https://example.invalid/x/demo", "commit": commit})
    tree = sources.fetch_source(recipe, opts(tmp_path, mirrors=(tmp_path / "mirror",), offline=True))
    assert (tree.path / "hello.txt").read_text() == "v1\n" and tree.pin == commit
    # Cached: the mirror is no longer needed.
    again = sources.fetch_source(recipe, opts(tmp_path, offline=True))
    assert again.path == tree.path


def test_git_source_offline_without_mirror(tmp_path):
    recipe = recipe_for(tmp_path, {"kind": "git", "url": "https://example.invalid/x/demo", "commit": "a" * 40})
    with pytest.raises(OfflineError, match="--source demo=DIR"):
        sources.fetch_source(recipe, opts(tmp_path, offline=True))


def test_override_directory_is_unverified_and_patched(tmp_path):
    local = tmp_path / "checkout"
    local.mkdir()
    (local / "hello.txt").write_text("hello\n")
    patch = write_patch(tmp_path, "0001-greet.patch", "hello", "hello, local")
    recipe = recipe_for(tmp_path, {"kind": "git", "url": "https://example.invalid/x/demo", "commit": "a" * 40}, [patch])
    tree = sources.fetch_source(recipe, opts(tmp_path, overrides={"demo": local}, offline=True))
    assert not tree.verified and tree.origin == str(local)
    assert (tree.path / "hello.txt").read_text() == "hello, local\n"
    assert (local / "hello.txt").read_text() == "hello\n"  # the user's tree is never modified
    (local / "hello.txt").write_text("hello\nchanged\n")
    with pytest.raises(PatchError):
        sources.fetch_source(recipe, opts(tmp_path, overrides={"demo": local}, offline=True))


def test_parse_overrides(tmp_path):
    assert sources.parse_overrides([f"x={tmp_path}"]) == {"x": tmp_path.resolve()}
    with pytest.raises(ConfigurationError, match="NAME=PATH"):
        sources.parse_overrides(["nonsense"])
    with pytest.raises(ConfigurationError, match="does not exist"):
        sources.parse_overrides([f"x={tmp_path}/missing"])


def test_an_override_that_is_neither_a_directory_nor_a_regular_file_is_refused(tmp_path):
    # probes S04 (--source moshi.cpp=/dev/zero) and S05 (a FIFO with no writer): they hung
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):
        with pytest.raises(ConfigurationError, match="neither a directory nor a regular file"):
            sources.parse_overrides([f"moshi.cpp={path}"])


def test_override_for_unknown_component(tmp_path, served_archive):
    server, sha = served_archive
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha})
    with pytest.raises(ConfigurationError, match="unknown component"):
        sources.fetch_all([recipe], opts(tmp_path, overrides={"nope": tmp_path}))


def test_lock_records_what_was_used(tmp_path, served_archive):
    import json
    server, sha = served_archive
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": f"{server.url}/demo-1.0.tar.gz", "sha256": sha})
    tree = sources.fetch_source(recipe, opts(tmp_path))
    sources.write_lock([tree], tmp_path / "lock.json")
    entry = json.loads((tmp_path / "lock.json").read_text())["sources"][0]
    assert entry["pin"] == sha and entry["verified"] is True and entry["origin"].endswith("demo-1.0.tar.gz")
