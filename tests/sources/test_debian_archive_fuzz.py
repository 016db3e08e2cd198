"""Property tests: the Debian archive lookup reads apt's source lists of this machine and of the
build root (one-line .list files and deb822 .sources files); whatever they hold, it returns
archive URIs (http, https, file) or none, and never raises."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from builder.sources import debian_archive

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

WORDS = ["deb", "deb-src", "[", "]", "arch=amd64", "signed-by=/k.gpg", "http://a.invalid/debian",
         "https://b.invalid/debian/", "file:/srv/mirror", "ftp://c.invalid", "trixie", "main", "#", " ", "\t",
         "\n", "\n\n", "Types:", "URIs:", "Suites:", "Components:", "Enabled:", "no", "yes", ":", " continued",
         "é", "\x00", "\r"]
apt_text = st.lists(st.sampled_from(WORDS) | st.text(max_size=8), max_size=40).map("".join)
apt_bytes = apt_text.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=200)


def check(uris):
    assert isinstance(uris, list) and len(uris) == len(set(uris))
    for uri in uris:
        assert uri.startswith(("http://", "https://", "file:/")) and not uri.endswith("/")


@FUZZ
@given(one_line=apt_bytes, deb822=apt_bytes, extra=apt_bytes)
@example(one_line=b"deb [unterminated http://a.invalid/debian x\n", deb822=b"URIs:\n\n\n", extra=b"\xff\xfe")
@example(one_line=b"deb http://a.invalid/debian/ x\ndeb http://a.invalid/debian x\n",
         deb822=b"Types: deb\nURIs: http://a.invalid/debian file:/m\nEnabled: no\n", extra=b"")
def test_random_source_lists(tmp_path_factory, one_line, deb822, extra):
    root = tmp_path_factory.mktemp("root")
    parts = root / "etc/apt/sources.list.d"
    parts.mkdir(parents=True)
    (root / "etc/apt/sources.list").write_bytes(one_line)
    (parts / "debian.sources").write_bytes(deb822)
    (parts / "extra.list").write_bytes(extra)
    uris = debian_archive.archive_uris([root])
    check(uris)
    for url in debian_archive.candidate_urls("libsdl2", "libsdl2_2.0.orig.tar.gz", "main", [root]):
        assert "/pool/main/libs/libsdl2/libsdl2_2.0.orig.tar.gz" in url


@FUZZ
@given(text=apt_text)
def test_the_two_parsers_on_any_text(text):
    for parse in (debian_archive._one_line_uris, debian_archive._deb822_uris):
        uris = parse(text)
        assert all(isinstance(u, str) and u for u in uris)


@FUZZ
@given(package=st.text(max_size=12), filename=st.text(max_size=12), component=st.text(max_size=8))
def test_pool_path_of_any_names(package, filename, component):
    path = debian_archive.pool_path(package, filename, component)
    assert path.startswith(f"pool/{component}/") and path.endswith(f"/{package}/{filename}")


@pytest.mark.timeout(30)  # before: reading the FIFO blocked for ever
def test_odd_files_in_the_apt_folders_are_skipped(tmp_path):
    parts = tmp_path / "etc/apt/sources.list.d"
    parts.mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").mkdir()              # a directory where the file belongs
    (parts / "dir.list").mkdir()                              # a directory named like a list
    (parts / "loop.sources").symlink_to(parts / "loop.sources")  # a link to itself
    os.mkfifo(parts / "fifo.list")                            # reading it would block
    (parts / "ok.list").write_text("deb http://a.invalid/debian trixie main\n")
    assert debian_archive.archive_uris([tmp_path, tmp_path / "missing"]) == ["http://a.invalid/debian"]
