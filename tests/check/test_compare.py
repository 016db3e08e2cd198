"""check/compare.py on wheels the tests write with zipfile (and one real ELF file)."""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path

import pytest

from builder.check import compare
from builder.cli import main
from builder.errors import ConfigurationError, NotAWheelError
from tests.helpers.elf import gcc

NAME = "demo-1.0-py3-none-any.whl"
STAMP = (2026, 2, 18, 0, 0, 0)


def write_wheel(path: Path, members: dict[str, bytes], *, stamps: dict[str, tuple] | None = None,
                modes: dict[str, int] | None = None, level: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, (stamps or {}).get(name, STAMP))
            info.external_attr = (modes or {}).get(name, 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=level)
    return path


MEMBERS = {"demo/__init__.py": b"", "demo/data.bin": bytes(range(256)) * 100,
           "demo-1.0.dist-info/RECORD": b"demo/__init__.py,,\n"}


def test_identical_wheels(tmp_path):
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS)
    b = write_wheel(tmp_path / "b" / NAME, MEMBERS)
    result = compare.compare_wheels(a, b)
    assert result.identical and result.difference is None
    assert "identical (sha256 " in result.line()


def test_a_timestamp_is_metadata(tmp_path):
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS)
    b = write_wheel(tmp_path / "b" / NAME, MEMBERS, stamps={"demo/data.bin": (2026, 11, 26, 18, 54, 24)})
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member) == ("metadata", "demo/data.bin")
    assert "timestamp 2026-02-18 00:00:00 vs 2026-11-26 18:54:24" in d.detail


def test_permissions_are_metadata(tmp_path):
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS)
    b = write_wheel(tmp_path / "b" / NAME, MEMBERS, modes={"demo/__init__.py": 0o100755})
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member) == ("metadata", "demo/__init__.py") and "permissions 0o100644 vs 0o100755" in d.detail


def test_content_reports_the_first_differing_offset(tmp_path):
    changed = bytearray(MEMBERS["demo/data.bin"])
    changed[12345] ^= 1
    changed[20000] ^= 1
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS)
    b = write_wheel(tmp_path / "b" / NAME, {**MEMBERS, "demo/data.bin": bytes(changed)})
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member, d.offset) == ("content", "demo/data.bin", 12345)
    assert "both 25,600 bytes" in d.detail and "ELF" not in d.detail
    assert "at byte 12,345" in d.line()


def test_content_of_an_elf_file_names_the_section(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    lib = gcc(tmp_path / "libx.so", 'const char *who(void) { return "first build"; }\n', soname="libx.so")
    data = lib.read_bytes()
    other = data.replace(b"first build", b"other build")
    assert other != data
    a = write_wheel(tmp_path / "a" / NAME, {**MEMBERS, "demo/libx.so": data})
    b = write_wheel(tmp_path / "b" / NAME, {**MEMBERS, "demo/libx.so": other})
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member) == ("content", "demo/libx.so")
    assert d.offset == data.index(b"first build")
    assert "in ELF section .rodata" in d.detail


def test_members_only_in_one_wheel_and_order(tmp_path):
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS)
    b = write_wheel(tmp_path / "b" / NAME, {**MEMBERS, "demo/extra.txt": b"x"})
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member) == ("members", "demo/extra.txt") and str(tmp_path / "b") in d.detail
    reordered = dict(reversed(list(MEMBERS.items())))
    c = write_wheel(tmp_path / "c" / NAME, reordered)
    d = compare.compare_wheels(a, c).difference
    assert d.kind == "members" and "another order" in d.detail


def test_same_members_other_compression_is_the_container(tmp_path):
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS, level=1)
    b = write_wheel(tmp_path / "b" / NAME, MEMBERS, level=9)
    assert zlib.compress(MEMBERS["demo/data.bin"], 1) != zlib.compress(MEMBERS["demo/data.bin"], 9)
    d = compare.compare_wheels(a, b).difference
    assert d.kind == "container" and d.member == "demo/data.bin" and d.offset > 0


def test_compare_folders(tmp_path):
    write_wheel(tmp_path / "a" / NAME, MEMBERS)
    write_wheel(tmp_path / "b" / NAME, MEMBERS)
    assert [r.identical for r in compare.compare_folders(tmp_path / "a", tmp_path / "b")] == [True]
    write_wheel(tmp_path / "c" / "demo-1.1-py3-none-any.whl", MEMBERS)
    with pytest.raises(ConfigurationError, match="different wheel files"):
        compare.compare_folders(tmp_path / "a", tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="no wheels"):
        compare.compare_folders(tmp_path / "empty", tmp_path / "a")


def test_not_a_wheel(tmp_path):
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS)
    bad = tmp_path / "b" / NAME
    bad.parent.mkdir()
    bad.write_bytes(b"not a zip")
    with pytest.raises(NotAWheelError, match="not a readable zip archive"):
        compare.compare_wheels(a, bad)


def test_cli_compare_exit_codes(tmp_path, capsys):
    a = write_wheel(tmp_path / "a" / NAME, MEMBERS)
    b = write_wheel(tmp_path / "b" / NAME, MEMBERS)
    c = write_wheel(tmp_path / "c" / NAME, MEMBERS, stamps={"demo/__init__.py": (2020, 1, 1, 0, 0, 0)})
    main(["compare", str(a), str(b)])
    assert "identical" in capsys.readouterr().out
    main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(c)])
    out = capsys.readouterr()
    assert exit_.value.code == 17
    assert "first difference (metadata) demo/__init__.py" in out.out
    assert out.err.count("\n") == 1 and "1 of 1 wheel(s) differ" in out.err
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(tmp_path / "b")])
    assert exit_.value.code == 2 and "two wheels or two folders" in capsys.readouterr().err
