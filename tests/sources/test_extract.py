import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from builder.errors import DiskFullError, RecipeError, UnsafeArchiveError
from builder.sources.extract import extract_archive, source_root


# -- building archives ---------------------------------------------------------


def _file(name: str, data: bytes = b"hello\n", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def make_tar(path: Path, members, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def make_zip(path: Path, members) -> Path:
    """members: (name, data) or (name, data, unix_mode)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, *rest in members:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (rest[0] if rest else 0o100644) << 16
            zf.writestr(info, data)
    return path


SOURCE = [
    _dir("proj-1.0"),
    _file("proj-1.0/README", b"read me\n"),
    _file("proj-1.0/configure", b"#!/bin/sh\n", 0o755),
    _file("proj-1.0/src/main.c", b"int main(void) { return 0; }\n"),
    _link("proj-1.0/src/alias.c", "main.c"),
    _link("proj-1.0/docs", "src"),
]


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def _assert_refused(archive: Path, dest: Path, member: str):
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, dest)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(archive) in msg
    assert member in msg
    assert "not trusted" in msg and "do not use it" in msg
    assert exc.value.return_code == 7
    # Refused before anything was written.
    assert list(dest.iterdir()) == []
    return msg


# -- good archives ---------------------------------------------------------------


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.xz", "w:xz"),
                                         (".tar.bz2", "w:bz2"), (".tar", "w")])
def test_tar_formats_extract(tmp_path, dest, suffix, mode):
    archive = make_tar(tmp_path / f"proj-1.0{suffix}", SOURCE, mode)
    extract_archive(archive, dest)
    root = dest / "proj-1.0"
    assert (root / "README").read_bytes() == b"read me\n"
    assert (root / "src" / "main.c").is_file()
    assert os.readlink(root / "src" / "alias.c") == "main.c"
    assert (root / "src" / "alias.c").read_text().startswith("int main")
    assert (root / "docs").is_symlink() and (root / "docs" / "main.c").is_file()
    assert os.stat(root / "configure").st_mode & stat.S_IXUSR


def test_zip_extracts(tmp_path, dest):
    archive = make_zip(tmp_path / "proj-1.0.zip", [
        ("proj-1.0/", b"", 0o040755),
        ("proj-1.0/README", b"read me\n"),
        ("proj-1.0/configure", b"#!/bin/sh\n", 0o100755),
        ("proj-1.0/src/main.c", b"int main(void) { return 0; }\n"),
        ("proj-1.0/src/alias.c", b"main.c", 0o120777),
    ])
    extract_archive(archive, dest)
    root = dest / "proj-1.0"
    assert (root / "README").read_bytes() == b"read me\n"
    assert os.stat(root / "configure").st_mode & stat.S_IXUSR
    assert not os.stat(root / "README").st_mode & stat.S_IXUSR
    assert os.readlink(root / "src" / "alias.c") == "main.c"
    assert (root / "src" / "alias.c").read_text().startswith("int main")


def test_zip_without_unix_modes(tmp_path, dest):
    archive = tmp_path / "plain.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/b.txt", "x")
    extract_archive(archive, dest)
    assert (dest / "a" / "b.txt").read_text() == "x"


def test_archive_type_is_sniffed_when_the_name_says_nothing(tmp_path, dest):
    archive = make_tar(tmp_path / "export.bin", SOURCE, "w:xz")
    extract_archive(archive, dest)
    assert (dest / "proj-1.0" / "README").is_file()


def test_not_an_archive(tmp_path, dest):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip data at all")
    with pytest.raises(UnsafeArchiveError, match="junk.tar.gz"):
        extract_archive(junk, dest)


def test_dest_must_be_empty(tmp_path, dest):
    archive = make_tar(tmp_path / "a.tar.gz", SOURCE)
    (dest / "left-over").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        extract_archive(archive, dest)
    with pytest.raises(ValueError, match="does not exist"):
        extract_archive(archive, tmp_path / "missing")


# -- malicious tar archives ------------------------------------------------------


def test_tar_absolute_path(tmp_path, dest):
    archive = make_tar(tmp_path / "evil.tar.gz", [_file("proj/ok"), _file("/tmp/evil-absolute")])
    msg = _assert_refused(archive, dest, "/tmp/evil-absolute")
    assert "absolute" in msg


def test_tar_dotdot(tmp_path, dest):
    archive = make_tar(tmp_path / "evil.tar.gz", [_file("proj/ok"), _file("proj/../../escaped")])
    _assert_refused(archive, dest, "proj/../../escaped")
    assert not (tmp_path / "escaped").exists()


def test_tar_symlink_to_absolute_path(tmp_path, dest):
    archive = make_tar(tmp_path / "evil.tar.gz", [_file("proj/ok"), _link("proj/passwd", "/etc/passwd")])
    msg = _assert_refused(archive, dest, "proj/passwd")
    assert "/etc/passwd" in msg


def test_tar_symlink_pointing_out(tmp_path, dest):
    archive = make_tar(tmp_path / "evil.tar.xz", [_link("proj/x", "../../x")], "w:xz")
    msg = _assert_refused(archive, dest, "proj/x")
    assert "outside" in msg


def test_tar_hardlink_pointing_out(tmp_path, dest):
    archive = make_tar(tmp_path / "evil.tar.gz", [_link("proj/h", "../../outside", tarfile.LNKTYPE)])
    _assert_refused(archive, dest, "proj/h")


def test_tar_hardlink_to_absolute_path(tmp_path, dest):
    archive = make_tar(tmp_path / "evil.tar.gz", [_link("proj/h", "/etc/passwd", tarfile.LNKTYPE)])
    _assert_refused(archive, dest, "proj/h")


def test_tar_symlink_then_write_through_it(tmp_path, dest):
    # A link that points out, followed by a file written "inside" it.
    archive = make_tar(tmp_path / "evil.tar.gz", [_link("proj/sub", "../.."), _file("proj/sub/pwned")])
    _assert_refused(archive, dest, "proj/sub")
    assert not (tmp_path / "pwned").exists()


def test_tar_device_file(tmp_path, dest):
    info = tarfile.TarInfo("proj/null")
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    archive = make_tar(tmp_path / "evil.tar.gz", [(info, None)])
    msg = _assert_refused(archive, dest, "proj/null")
    assert "device" in msg


# -- malicious zip archives ------------------------------------------------------


def test_zip_dotdot(tmp_path, dest):
    archive = make_zip(tmp_path / "evil.zip", [("proj/ok", b"x"), ("proj/../../escaped", b"x")])
    _assert_refused(archive, dest, "proj/../../escaped")
    assert not (tmp_path / "escaped").exists()


def test_zip_absolute_path(tmp_path, dest):
    archive = make_zip(tmp_path / "evil.zip", [("/tmp/evil-absolute", b"x")])
    _assert_refused(archive, dest, "/tmp/evil-absolute")


def test_zip_symlink_to_absolute_path(tmp_path, dest):
    archive = make_zip(tmp_path / "evil.zip", [("proj/passwd", b"/etc/passwd", 0o120777)])
    msg = _assert_refused(archive, dest, "proj/passwd")
    assert "/etc/passwd" in msg


def test_zip_symlink_pointing_out(tmp_path, dest):
    archive = make_zip(tmp_path / "evil.zip", [("proj/x", b"../../x", 0o120777)])
    _assert_refused(archive, dest, "proj/x")


def test_zip_write_through_own_symlink(tmp_path, dest):
    archive = make_zip(tmp_path / "evil.zip", [("proj/sub", b".", 0o120777), ("proj/sub/f", b"x")])
    _assert_refused(archive, dest, "proj/sub/f")


def test_zip_dotdot_that_stays_inside_is_fine(tmp_path, dest):
    archive = make_zip(tmp_path / "ok.zip", [("proj/a/../b.txt", b"x")])
    extract_archive(archive, dest)
    assert (dest / "proj" / "b.txt").read_text() == "x"


# -- disk full ---------------------------------------------------------------------


def test_enospc_becomes_disk_full_error(tmp_path, dest, monkeypatch):
    archive = make_tar(tmp_path / "a.tar.gz", SOURCE)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", no_space)
    with pytest.raises(DiskFullError, match=str(dest)):
        extract_archive(archive, dest)


def test_enospc_in_zip(tmp_path, dest, monkeypatch):
    archive = make_zip(tmp_path / "a.zip", [("proj/f", b"x")])
    import shutil

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", no_space)
    with pytest.raises(DiskFullError):
        extract_archive(archive, dest)


# -- source_root -------------------------------------------------------------------


def test_source_root_single_top_directory(tmp_path, dest):
    extract_archive(make_tar(tmp_path / "a.tar.gz", SOURCE), dest)
    assert source_root(dest, None) == dest / "proj-1.0"


def test_source_root_several_top_entries(tmp_path, dest):
    (dest / "src").mkdir()
    (dest / "CMakeLists.txt").write_text("")
    assert source_root(dest, None) == dest


def test_source_root_single_top_file(dest):
    (dest / "only.txt").write_text("")
    assert source_root(dest, None) == dest


def test_source_root_single_top_symlink_is_not_followed(dest):
    (dest / "link").symlink_to("/tmp")
    assert source_root(dest, None) == dest


def test_source_root_subdirectory(dest):
    (dest / "pkg-1.0" / "vendor" / "lib").mkdir(parents=True)
    assert source_root(dest, "pkg-1.0/vendor/lib") == dest / "pkg-1.0" / "vendor" / "lib"


def test_source_root_missing_subdirectory_lists_what_exists(dest):
    (dest / "pkg-1.0").mkdir()
    (dest / "pkg-1.0" / "other").mkdir()
    (dest / "notes.txt").write_text("")
    with pytest.raises(RecipeError) as exc:
        source_root(dest, "pkg-2.0/src")
    msg = str(exc.value)
    assert "pkg-2.0/src" in msg and "pkg-1.0/" in msg and "notes.txt" in msg
    with pytest.raises(RecipeError) as exc:
        source_root(dest, "pkg-1.0/vendor")
    assert "pkg-1.0/ has: other/" in str(exc.value)


def test_source_root_subdirectory_may_not_escape(dest):
    with pytest.raises(RecipeError):
        source_root(dest, "../elsewhere")
    with pytest.raises(RecipeError):
        source_root(dest, "/etc")


# (.tar.gz is left out: tarfile takes a damaged header after the first one for the end of the archive.)
@pytest.mark.parametrize("suffix, mode", [(".tar.xz", "w:xz"), (".tar.bz2", "w:bz2"), (".zip", None)])
def test_a_damaged_stream_is_an_unsafe_archive_not_a_traceback(tmp_path, dest, suffix, mode):
    # Bytes no sha256 vouched for (a --source archive): damaged in the middle of a member.
    big = b"".join(b"line %d of a source file\n" % i for i in range(20000))  # compressed, so damage shows
    path = tmp_path / f"damaged{suffix}"
    if mode:
        make_tar(path, [_dir("p"), _file("p/a", big), _file("p/b", big)], mode)
    else:
        make_zip(path, [("p/a", big), ("p/b", big)])
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeArchiveError, match="cannot read"):
        extract_archive(path, dest)


# -- chains of links (issue 24, items 2 and 3) ------------------------------------------


def test_zip_link_chain_that_leaves_the_tree_is_refused(tmp_path, dest):
    """Each link is inside on its own, lexically; followed one after the other they lead out."""
    archive = make_zip(tmp_path / "evil.zip", [("a/b/L", b"../..", 0o120777), ("a/b/esc", b"L/../../..", 0o120777)])
    msg = _assert_refused(archive, dest, "a/b/esc")
    assert "passes through the archive's link 'a/b/L'" in msg


def test_tar_link_chain_that_leaves_the_tree_is_refused(tmp_path, dest):
    archive = make_tar(tmp_path / "evil.tar.gz", [_dir("a"), _dir("a/b"), _link("a/b/L", "../.."),
                                                   _link("a/b/esc", "L/../../..")])
    _assert_refused(archive, dest, "a/b/esc")


def test_tar_link_past_path_max_is_refused(tmp_path, dest):
    """CVE-2025-4517: a chain of links whose realpath() passes PATH_MAX slips through Python's
    data filter before 3.11.13; a name or target longer than MAX_LINK_TEXT is refused here."""
    deep = "/".join(["d" * 200] * 6)
    archive = make_tar(tmp_path / "evil.tar", [_link("proj/x", deep + "/../" * 3)], mode="w")
    _assert_refused(archive, dest, "proj/x")


def test_links_that_stay_inside_without_chaining_still_extract(tmp_path, dest):
    archive = make_tar(tmp_path / "ok.tar.gz", SOURCE + [_link("proj-1.0/src/up.c", "../README")])
    extract_archive(archive, dest)
    assert (dest / "proj-1.0" / "src" / "up.c").read_bytes() == b"read me\n"
