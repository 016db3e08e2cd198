"""common/wheel_reader.py: the one reader of built wheels (verify, the size report, the packaging step)."""

from __future__ import annotations

import os
import sys
import shutil
import zipfile
from pathlib import Path

from builder.common import wheel_reader
from tests.helpers.cli import run_cli
from tests.helpers.imports import imported_modules

REPO = Path(__file__).resolve().parents[2]


def test_inspect_wheel(tmp_path):
    exe = Path(shutil.which("true") or "/bin/true").resolve()
    path = tmp_path / "demo_pkg-1.0-py3-none-manylinux_2_39_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("demo/bin/tool")
        info.external_attr = 0o755 << 16
        zf.writestr(info, exe.read_bytes())
        zf.writestr("demo/__init__.py", "")
    report = wheel_reader.inspect_wheel(path)
    assert report.tags == ["py3-none-manylinux_2_39_x86_64"]
    assert report.platform_tags == ["manylinux_2_39_x86_64"]
    assert report.modes["demo/bin/tool"] == 0o755
    assert set(report.elf) == {"demo/bin/tool"} and report.elf["demo/bin/tool"].kind == "executable"
    assert report.largest(1)[0][0] == "demo/bin/tool"
    assert report.libs_dir is None


def sizes_wheel(directory: Path) -> Path:
    path = directory / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo/big.bin", b"\0" * 100_000)
        zf.writestr("demo_pkg.libs/libfoo-0123abcd.so.1.2", b"not an ELF file")
    return path


def test_sizes_only_read_extracts_nothing(tmp_path, monkeypatch):
    path = sizes_wheel(tmp_path)

    def no_temporary_directory(*args, **kwargs):
        raise AssertionError("a sizes-only read extracted something")

    monkeypatch.setattr(wheel_reader.tempfile, "TemporaryDirectory", no_temporary_directory)
    report = wheel_reader.inspect_wheel(path, elf=False)
    assert report.files["demo/big.bin"] == 100_000
    assert 0 < report.compressed["demo/big.bin"] < 1_000


def test_members_are_extracted_to_the_temporary_directory_never_beside_the_wheel(tmp_path, monkeypatch):
    """The wheel's folder may be read-only (a mounted release, a CI artifact): nothing is written there."""
    path = sizes_wheel(tmp_path)
    used = []
    real = wheel_reader.tempfile.TemporaryDirectory

    def recording(*args, dir=None, **kwargs):
        used.append(dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(wheel_reader.tempfile, "TemporaryDirectory", recording)
    before = sorted(tmp_path.iterdir())
    tmp_path.chmod(0o555)
    try:
        report = wheel_reader.inspect_wheel(path, strict=True)
    finally:
        tmp_path.chmod(0o755)
    assert used == [None]
    assert sorted(tmp_path.iterdir()) == before
    assert report.files["demo/big.bin"] == 100_000 and report.elf == {}


def test_compressed_sizes_and_libs_dir(tmp_path):
    report = wheel_reader.inspect_wheel(sizes_wheel(tmp_path), elf=False)
    assert set(report.compressed) == set(report.files)
    assert report.compressed["demo/big.bin"] < report.files["demo/big.bin"]
    assert report.libs_dir == "demo_pkg.libs"


def test_auditwheels_naming_both_ways():
    grafted = wheel_reader.grafted_name("libamdhip64.so.6.4.43484", "0123abcd")
    assert grafted == "libamdhip64-0123abcd.so.6.4.43484"
    libs = "moshi_rocm_gfx1100.libs"
    assert wheel_reader.built_name(f"{libs}/{grafted}", libs) == "libamdhip64.so.6.4.43484"
    # only grafted files lose the hash: a member elsewhere keeps its name
    assert wheel_reader.built_name(f"moshi_rocm/bin/{grafted}", libs) == grafted
    assert wheel_reader.built_name(f"{libs}/libamd_comgr.so.3", libs) == "libamd_comgr.so.3"


def test_check_does_not_import_the_wheel_builder():
    """verify reads a wheel with its own reader: nothing in builder/check (nor the reader) imports
    package/wheel, staging or project."""
    builder_side = {"builder.package.wheel", "builder.package.staging", "builder.package.project"}
    paths = sorted((REPO / "builder" / "check").rglob("*.py")) + [REPO / "builder" / "common" / "wheel_reader.py"]
    assert len(paths) > 20
    for path in paths:
        assert not imported_modules(path) & builder_side, path.name


def test_the_reader_imports_nothing_of_check():
    """The packaging stage reads wheels through it: it must not reach up into the checking stage."""
    assert not {m for m in imported_modules(REPO / "builder" / "common" / "wheel_reader.py")
                if m.startswith("builder.check")}


# --------------------------------------------------------------------------- what is not a wheel, and absurd members

import io

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from builder.errors import FatalError, NotAWheelError

WHEEL_NAME = "demo_pkg-1.0-py3-none-any.whl"


def good_zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo/__init__.py", "x = 1\n" * 200)
        zf.writestr("demo/lib.so", b"\x7fELF" + bytes(200))
        zf.writestr("demo_pkg-1.0.dist-info/RECORD", "demo/__init__.py,,\n")
    return buf.getvalue()


def encrypted(data: bytes) -> bytes:
    """The zip with every member flagged as encrypted (general purpose bit 0), local and central headers."""
    out = bytearray(data)
    for magic, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(magic)
        while pos >= 0:
            out[pos + at] |= 1
            pos = out.find(magic, pos + 4)
    return bytes(out)


NOT_WHEELS = {
    "encrypted members": (WHEEL_NAME, encrypted(good_zip_bytes())),
    "not a zip": (WHEEL_NAME, b"this is a text file, not a zip archive\n"),
    "empty": (WHEEL_NAME, b""),
    "truncated": (WHEEL_NAME, good_zip_bytes()[:150]),
    "truncated end": (WHEEL_NAME, good_zip_bytes()[:-10]),
    "bad name": ("demo.whl", good_zip_bytes()),
    "directory": (WHEEL_NAME, None),
}


@pytest.mark.parametrize("case", sorted(NOT_WHEELS))
def test_a_file_that_is_not_a_wheel_is_a_usage_error(tmp_path, capsys, case):
    name, data = NOT_WHEELS[case]
    path = tmp_path / name
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    with pytest.raises(NotAWheelError):
        wheel_reader.inspect_wheel(path, strict=True)
    assert run_cli(["verify", str(path)]) == NotAWheelError.return_code == 16
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"moshi-build: error: {path} is not a wheel: "), lines
    assert "Traceback" not in captured.err


def test_a_member_of_absurd_size_or_ratio_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo/bomb.bin", b"\0" * (2 << 20), compress_type=zipfile.ZIP_BZIP2)
        zf.writestr("demo/big.bin", b"1" * 5000)
    read = []
    report = wheel_reader.inspect_wheel(path, scan=lambda member, chunk: read.append(member))
    assert report.problems[0].startswith("demo/bomb.bin would grow ")
    assert report.problems[0].endswith(f"times when unpacked (at most {wheel_reader.MAX_RATIO} is sane): not read")
    assert "demo/bomb.bin" not in read and "demo/bomb.bin" not in report.files
    monkeypatch.setattr(wheel_reader, "MAX_MEMBER_SIZE", 4096)
    report = wheel_reader.inspect_wheel(path, scan=lambda member, chunk: read.append(member))
    assert "demo/big.bin declares 5,000 bytes, over the 0 GiB a member may have: not read" in report.problems
    assert wheel_reader.MAX_MEMBER_SIZE == 4096 and "demo/big.bin" not in report.files


def test_member_names_pip_refuses():
    assert wheel_reader.unsafe_name("../../evil") and wheel_reader.unsafe_name("/abs/path")
    assert wheel_reader.unsafe_name("demo/../../x") and wheel_reader.unsafe_name("C:/x") and wheel_reader.unsafe_name("a\\..\\b")
    assert wheel_reader.unsafe_name("demo/bin/libx.so") is None and wheel_reader.unsafe_name("demo/..x/y") is None


# --------------------------------------------------------------------------- property-based: only our errors

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_any(directory: Path, data: bytes) -> None:
    """inspect_wheel on `data` as a wheel file: a report (its problems listed) or our error, nothing else."""
    path = directory / WHEEL_NAME
    path.write_bytes(data)
    try:
        report = wheel_reader.inspect_wheel(path, strict=True, scan=lambda member, chunk: None)
    except NotAWheelError as e:
        assert str(e).startswith(f"{path} is not a wheel: ") and "\n" not in str(e)
    else:
        assert all(isinstance(p, str) and "\n" not in p for p in report.problems)


@PROPERTY
@given(data=st.binary(max_size=2048))
def test_random_bytes_give_our_error(tmp_path, data):
    read_any(tmp_path, data)


@PROPERTY
@given(data=st.binary(max_size=64), prefix=st.sampled_from([b"PK\x03\x04", b"PK\x05\x06", b"PK\x01\x02", b""]))
def test_random_bytes_looking_like_a_zip_give_our_error(tmp_path, prefix, data):
    read_any(tmp_path, prefix + data + (b"PK\x05\x06" + bytes(18) if len(data) % 2 else b""))


@PROPERTY
@given(cut=st.integers(min_value=0, max_value=10_000), flip=st.integers(min_value=0, max_value=10_000),
       byte=st.integers(min_value=0, max_value=255))
def test_truncated_or_damaged_real_zips_give_our_error(tmp_path, cut, flip, byte):
    data = bytearray(good_zip_bytes())
    if flip < len(data):
        data[flip] = byte
    read_any(tmp_path, bytes(data[:len(data) - cut % len(data)]) if cut % 3 else bytes(data))


member_names = st.text(st.sampled_from("ab./\\:\x00é-_"), min_size=1, max_size=12)


@PROPERTY
@given(entries=st.lists(st.tuples(member_names, st.integers(min_value=0, max_value=0xFFFF),
                                  st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2]),
                                  st.binary(max_size=64)), max_size=6),
       record=st.one_of(st.none(), st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_zips_with_random_names_and_modes_give_a_report_or_our_error(tmp_path, entries, record):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, mode, method, content in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = method
            zf.writestr(info, b"\x7fELF" + content if mode & 1 else content)
        if record is not None:
            zf.writestr("demo_pkg-1.0.dist-info/RECORD", record)
    read_any(tmp_path, buf.getvalue())


def test_an_elf_magic_in_front_of_zeros_is_not_an_elf_to_write_out():
    """Issue 24, item 8: a member of 1 GiB of zeros behind the magic was written to the temp folder."""
    real = Path(os.path.realpath(sys.executable)).read_bytes()
    assert wheel_reader.plausible_elf(real[:64], len(real))
    assert not wheel_reader.plausible_elf(b"\x7fELF" + bytes(60), 1 << 30)
    assert not wheel_reader.plausible_elf(real[:64], 100)          # its section table would lie past the end


def test_an_elf_member_over_the_extract_bound_is_named_not_written_out(tmp_path, monkeypatch):
    # probe F08c: verify wrote a 1 GiB member with a plausible ELF64 header to TMPDIR
    head = b"\x7fELF\x02\x01\x01" + b"\0" * 57       # section table at 0, no sections: plausible
    wheel = tmp_path / "moshi_rocm-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("moshi_rocm/bin/libbig.so", head + b"\0" * (4 << 20))
    written = []
    real_open = open

    def watching_open(file, mode="r", *args, **kwargs):
        if "w" in mode:
            written.append(file)
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr("builtins.open", watching_open)
    report = wheel_reader.inspect_wheel(wheel, max_elf_size=1 << 20, examine=lambda *a: written.append(a))
    monkeypatch.undo()
    assert written == [] and report.elf == {}
    assert any("libbig.so is an ELF file of 4,194,368 bytes, over the 1,048,576" in p for p in report.problems)


def test_verify_fails_an_elf_member_over_its_setting_in_one_line(tmp_path):
    import dataclasses
    from builder.check import verify
    head = b"\x7fELF\x02\x01\x01" + b"\0" * 57
    wheel = tmp_path / "moshi_rocm-1.0-py3-none-manylinux_2_31_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("moshi_rocm/bin/libbig.so", head + b"\0" * (2 << 20))
    assert verify.load_settings().max_elf_extract == 512 << 20
    settings = dataclasses.replace(verify.load_settings(), max_elf_extract=1 << 20)
    report = verify.verify_wheel(wheel, settings=settings)
    archive = {c.name: c for c in report.checks}["archive"]
    assert not archive.ok and "max_elf_extract setting): not examined" in archive.line and "\n" not in archive.line
