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


# --- hostile wheels (probe 24: F09c, V03, V04) --------------------------------


def raw_zip(path: Path, members: list[dict]) -> Path:
    """members: dicts name, data (compressed bytes), crc, size, method (8 deflate, 14 lzma), flags."""
    import struct
    path.parent.mkdir(parents=True, exist_ok=True)
    dostime, dosdate = 0, (40 << 9) | (1 << 5) | 1
    central = b""
    with open(path, "wb") as f:
        for m in members:
            name = m["name"].encode()
            offset = f.tell()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, m.get("flags", 0), m.get("method", 8), dostime, dosdate,
                                m["crc"], len(m["data"]), m["size"], len(name), 0) + name + m["data"])
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, m.get("flags", 0),
                                   m.get("method", 8), dostime, dosdate, m["crc"], len(m["data"]), m["size"],
                                   len(name), 0, 0, 0, 0, 0o100644 << 16, offset) + name
        cd_offset = f.tell()
        f.write(central)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), cd_offset, 0))
    return path


def deflated(name: str, data: bytes, **kw) -> dict:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return {"name": name, "data": c.compress(data) + c.flush(), "crc": zlib.crc32(data), "size": len(data), **kw}


def test_an_encrypted_member_is_a_one_line_difference(tmp_path):
    # probe F09c: zipfile raised RuntimeError ("password required")
    a = raw_zip(tmp_path / "a" / NAME, [deflated("demo/_runtime.json", b'{"version": "1"}', flags=0x1)])
    b = raw_zip(tmp_path / "b" / NAME, [deflated("demo/_runtime.json", b'{"version": "2"}', flags=0x1)])
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member) == ("content", "demo/_runtime.json")
    assert "cannot be compared" in d.detail and "encrypted" in d.detail and "\n" not in d.line()


def test_an_lzma_bomb_is_not_unpacked(tmp_path):
    # probe V04: 3.1 GB RSS and BadZipFile for two 150 KB wheels; compare had no ratio bound
    import lzma
    filters = [{"id": lzma.FILTER_LZMA1, "preset": 1, "dict_size": 1 << 20}]
    c = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=filters)
    zeros = b"\0" * (64 << 20)
    props = lzma._encode_filter_properties(filters[0])
    data = struct_pack_lzma(props) + c.compress(zeros) + c.flush()
    bomb = {"name": "demo/bomb.bin", "data": data, "crc": zlib.crc32(zeros), "size": len(zeros), "method": 14,
            "flags": 0x2}
    a = raw_zip(tmp_path / "a" / NAME, [bomb, deflated("demo/x", b"a")])
    b = raw_zip(tmp_path / "b" / NAME, [dict(bomb, crc=bomb["crc"] ^ 1), deflated("demo/x", b"b")])
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member) == ("content", "demo/bomb.bin")
    assert "cannot be compared" in d.detail and "times when unpacked" in d.detail


def struct_pack_lzma(props: bytes) -> bytes:
    import struct
    return struct.pack("<BBH", 9, 4, len(props)) + props


def test_an_elf_looking_member_is_never_read_whole(tmp_path, monkeypatch):
    # probe V03: _elf_section_at read a whole 1 GiB '\x7fELF'+zeros member into memory
    size = 8 << 20
    head = b"\x7fELF\x02\x01\x01" + b"\0" * (size - 8)
    a = raw_zip(tmp_path / "a" / NAME, [deflated("demo/libx.so", head + b"\0")])
    b = raw_zip(tmp_path / "b" / NAME, [deflated("demo/libx.so", head + b"\1")])

    def no_whole_read(*args, **kwargs):
        raise AssertionError("a member read whole")
    monkeypatch.setattr(zipfile.ZipFile, "read", no_whole_read)
    d = compare.compare_wheels(a, b).difference
    assert (d.kind, d.member, d.offset) == ("content", "demo/libx.so", size - 1)
    assert "ELF section" not in d.detail       # no section table: nothing named, nothing read whole
