"""check/reader.py: the one reader of built wheels (verify, the size report, the packaging step)."""

from __future__ import annotations

import ast
import shutil
import zipfile
from pathlib import Path

from builder.check import reader

REPO = Path(__file__).resolve().parents[2]


def test_inspect_wheel(tmp_path):
    exe = Path(shutil.which("true") or "/bin/true").resolve()
    path = tmp_path / "demo_pkg-1.0-py3-none-manylinux_2_39_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("demo/bin/tool")
        info.external_attr = 0o755 << 16
        zf.writestr(info, exe.read_bytes())
        zf.writestr("demo/__init__.py", "")
    report = reader.inspect_wheel(path)
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

    monkeypatch.setattr(reader.tempfile, "TemporaryDirectory", no_temporary_directory)
    report = reader.inspect_wheel(path, elf=False)
    assert report.files["demo/big.bin"] == 100_000
    assert 0 < report.compressed["demo/big.bin"] < 1_000


def test_members_are_extracted_elsewhere_when_the_wheels_folder_is_read_only(tmp_path, monkeypatch):
    path = sizes_wheel(tmp_path)
    used = []
    real = reader.tempfile.TemporaryDirectory

    def recording(*args, dir=None, **kwargs):
        used.append(dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(reader.tempfile, "TemporaryDirectory", recording)
    reader.inspect_wheel(path)
    monkeypatch.setattr(reader.os, "access", lambda *args, **kwargs: False)
    report = reader.inspect_wheel(path)
    assert used == [tmp_path, None]
    assert report.files["demo/big.bin"] == 100_000 and report.elf == {}


def test_compressed_sizes_and_libs_dir(tmp_path):
    report = reader.inspect_wheel(sizes_wheel(tmp_path), elf=False)
    assert set(report.compressed) == set(report.files)
    assert report.compressed["demo/big.bin"] < report.files["demo/big.bin"]
    assert report.libs_dir == "demo_pkg.libs"


def test_auditwheels_naming_both_ways():
    grafted = reader.grafted_name("libamdhip64.so.6.4.43484", "0123abcd")
    assert grafted == "libamdhip64-0123abcd.so.6.4.43484"
    libs = "moshi_rocm_gfx1100.libs"
    assert reader.built_name(f"{libs}/{grafted}", libs) == "libamdhip64.so.6.4.43484"
    # only grafted files lose the hash: a member elsewhere keeps its name
    assert reader.built_name(f"moshi_rocm/bin/{grafted}", libs) == grafted
    assert reader.built_name(f"{libs}/libamd_comgr.so.3", libs) == "libamd_comgr.so.3"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_check_does_not_import_the_wheel_builder():
    """verify reads a wheel with its own reader: nothing in builder/check imports package/wheel, staging or project."""
    builder_side = {"builder.package.wheel", "builder.package.staging", "builder.package.project"}
    for path in sorted((REPO / "builder" / "check").glob("*.py")):
        assert not _imported_modules(path) & builder_side, path.name
