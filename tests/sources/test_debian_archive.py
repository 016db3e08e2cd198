"""The debian source kind: archive URIs from apt's configuration, files from the pool."""

from pathlib import Path

import pytest

from builder.sources import debian_archive
from builder.sources import fetch as sources
from builder.common.cache import Cache
from builder.errors import ChecksumMismatchError, DownloadError, RecipeError
from tests.helpers.archives import make_tarball, recipe_for


def write_apt_sources(root: Path, one_line: str = "", deb822: str = "") -> Path:
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text(one_line)
    if deb822:
        (root / "etc/apt/sources.list.d/debian.sources").write_text(deb822)
    return root


def test_pool_path_follows_debians_layout():
    assert debian_archive.pool_path("libsdl2", "f.orig.tar.gz") == "pool/main/libs/libsdl2/f.orig.tar.gz"
    assert debian_archive.pool_path("ffmpeg", "f", "main") == "pool/main/f/ffmpeg/f"
    assert debian_archive.pool_path("zlib", "f", "contrib") == "pool/contrib/z/zlib/f"


def test_uris_from_one_line_and_deb822_files(tmp_path):
    root = write_apt_sources(
        tmp_path,
        one_line="# comment\ndeb [signed-by=/k.gpg] http://one.invalid/debian trixie main\n"
                 "deb http://one.invalid/debian sid main\ndeb-src http://src.invalid/debian trixie main\n",
        deb822="Types: deb\nURIs: http://two.invalid/debian/\nSuites: bookworm\nComponents: main\n\n"
               "Types: deb\nURIs: http://off.invalid/debian\nSuites: x\nEnabled: no\n",
    )
    assert debian_archive.archive_uris([root]) == [
        "http://one.invalid/debian", "http://src.invalid/debian", "http://two.invalid/debian"]
    assert debian_archive.archive_uris([tmp_path / "nothing"]) == []


def debian_recipe(tmp_path, sha, package="demo"):
    return recipe_for(tmp_path, {"kind": "debian", "package": package, "version": "1.0-1",
                                 "filename": "demo_1.0.orig.tar.gz", "sha256": sha})


def test_file_found_in_the_second_configured_archive(tmp_path, file_server):
    pool = file_server.root / "b/debian/pool/main/d/demo"
    pool.mkdir(parents=True)
    sha = make_tarball(pool / "demo_1.0.orig.tar.gz", {"hello.txt": "hi\n", "LICENSE": "MIT\n"})
    root = write_apt_sources(tmp_path / "r", one_line=f"deb {file_server.url}/a/debian trixie main\n"
                                                      f"deb {file_server.url}/b/debian trixie main\n")
    tree = sources.fetch_source(debian_recipe(tmp_path, sha),
                                sources.FetchOptions(cache=Cache(tmp_path / "cache"), progress=False,
                                                     apt_roots=(root,)))
    assert (tree.path / "hello.txt").read_text() == "hi\n"
    assert tree.origin == f"{file_server.url}/b/debian/pool/main/d/demo/demo_1.0.orig.tar.gz"
    assert "/a/debian/pool/main/d/demo/demo_1.0.orig.tar.gz" in file_server.requests  # tried first, 404


def test_missing_everywhere_says_what_to_do(tmp_path, file_server):
    root = write_apt_sources(tmp_path / "r", one_line=f"deb {file_server.url}/debian trixie main\n")
    opts = sources.FetchOptions(cache=Cache(tmp_path / "cache"), progress=False, apt_roots=(root,))
    with pytest.raises(DownloadError, match="is in none of the archives apt is configured with.*--mirror"):
        sources.fetch_source(debian_recipe(tmp_path, "0" * 64), opts)
    opts.apt_roots = (tmp_path / "empty",)
    with pytest.raises(DownloadError, match="no apt sources were found"):
        sources.fetch_source(debian_recipe(tmp_path, "0" * 64), opts)


def test_wrong_bytes_in_the_archive_are_refused(tmp_path, file_server):
    pool = file_server.root / "debian/pool/main/d/demo"
    pool.mkdir(parents=True)
    make_tarball(pool / "demo_1.0.orig.tar.gz", {"hello.txt": "changed\n"})
    root = write_apt_sources(tmp_path / "r", one_line=f"deb {file_server.url}/debian trixie main\n")
    opts = sources.FetchOptions(cache=Cache(tmp_path / "cache"), progress=False, apt_roots=(root,))
    with pytest.raises(ChecksumMismatchError):
        sources.fetch_source(debian_recipe(tmp_path, "1" * 64), opts)
    assert not list((tmp_path / "cache").rglob("demo_1.0.orig.tar.gz"))


def test_recipe_rejects_a_file_that_is_not_an_orig_tarball(tmp_path):
    with pytest.raises(RecipeError, match="filename"):
        recipe_for(tmp_path, {"kind": "debian", "package": "demo", "version": "1",
                              "filename": "demo_1.0-1_amd64.deb", "sha256": "0" * 64})
