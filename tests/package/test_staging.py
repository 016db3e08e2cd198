"""staging.stage_payload: the wheel's payload from a step prefix and a runtime root.

The inputs are tests/helpers/payload.py's: a tool and a library compiled here, a
fake root with a dpkg database, and runtime rules parsed from a small dict.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.errors import BuildStepError, ToolchainError
from builder.common import elfinfo
from builder.package import staging
from tests.helpers.elf import HAVE_GCC
from tests.helpers.payload import LIBS_DIR, TOOL, TinyInputs, make_tiny_inputs, runtime_spec

pytestmark = pytest.mark.skipif(not HAVE_GCC or shutil.which("patchelf") is None or shutil.which("strip") is None,
                                reason="needs gcc, patchelf and strip")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyInputs:
    return make_tiny_inputs(tmp_path_factory.mktemp("tiny"))


def stage(tmp_path: Path, tiny: TinyInputs, runtime_root: Path | None = None, **kw):
    lines: list[str] = []
    payload = staging.stage_payload(
        root=tmp_path / "payload", prefixes=tiny.prefixes, tools=[TOOL], runtime_root=runtime_root or tiny.root.path,
        gpu_target="gfx1100", spec=kw.pop("spec", None) or runtime_spec(), ext=staging.find_external_tools(True),
        log_path=tmp_path / "stage.log", echo=lines.append, **kw)
    return payload, lines


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_runpaths_closure_and_packages(tmp_path, tiny):
    assert elfinfo.read_elf(tiny.prefix / "bin" / TOOL).debug     # what the step installed
    payload, lines = stage(tmp_path, tiny)
    root = tmp_path / "payload"

    # Tools, our libraries (under their SONAME, symlinks collapsed) and data files in <package>/bin;
    # the dlopen'd library in auditwheel's folder, beside the grafted library that opens it; the
    # data folder trimmed to the target. Nothing else (no headers, no dev symlinks).
    assert files_under(root) == {
        f"moshi_rocm/bin/{TOOL}": 0o755,
        "moshi_rocm/bin/libtiny-core.so.1": 0o755,
        "moshi_rocm/bin/tiny-config.json": 0o644,
        "moshi_rocm/foo/data/common.dat": 0o644,
        "moshi_rocm/foo/data/kern_gfx1100.dat": 0o644,
        f"{LIBS_DIR}/libfoo-plugin.so.1": 0o755,
    }
    assert payload.package_dir == root / "moshi_rocm" and payload.tools == [TOOL]
    assert payload.elf_files == [root / "moshi_rocm/bin" / TOOL, root / "moshi_rocm/bin/libtiny-core.so.1",
                                 root / LIBS_DIR / "libfoo-plugin.so.1"]
    # Every staged ELF file: stripped, and its RUNPATH $ORIGIN alone (the build's prefix is gone).
    for f in payload.elf_files:
        facts = elfinfo.read_elf(f)
        assert facts.runpath == ("$ORIGIN",), f
        assert not facts.debug, f
    assert elfinfo.read_elf(root / "moshi_rocm/bin" / TOOL).needed[:2] == ("libtiny-core.so.1", "libfoo.so.1")

    # What auditwheel will graft: the root's libraries, by SONAME, the plugin's own needs included;
    # not the plugin itself (a file of the wheel now), not libz (the system's), not our library.
    libdir = tiny.root.libdir
    assert {s: (l.path, l.realpath) for s, l in payload.closure.libraries.items()} == {
        "libfoo.so.1": (libdir / "libfoo.so.1", libdir / "libfoo.so.1.0.0"),
        "libbar.so.2": (libdir / "libbar.so.2", libdir / "libbar.so.2.0.0"),
        "libqux.so.0": (libdir / "libqux.so.0", libdir / "libqux.so.0.0.0"),
    }
    assert payload.closure.libraries["libqux.so.0"].needed_by == {"libfoo-plugin.so.1"}
    assert payload.dlopened == {"libfoo-plugin.so.1": root / LIBS_DIR / "libfoo-plugin.so.1"}
    assert payload.openers["libfoo-plugin.so.1"].soname == "libfoo.so.1"
    assert payload.env == {"FOO_DATA": "foo/data"}
    assert payload.data_dirs == {"foo data": (tiny.data_source, 2, 1)}
    assert payload.ldpaths[0] == libdir and payload.standins == []

    # The packages that own what ships, their versions, licenses and copyright files.
    doc = tiny.root.path / "usr/share/doc"
    assert [(p.package, p.version, p.license, p.copyright, p.libraries) for p in payload.system] == [
        ("libbar2", "1.2-1", "LicenseRef-Debian-libbar2", doc / "libbar2/copyright", ("libbar.so.2",)),
        ("libfoo1", "2.0-3", "MIT", doc / "libfoo1/copyright", ("libfoo-plugin.so.1", "libfoo.so.1")),
        ("libqux0", "0.9-2", "BSD-3-Clause", doc / "libqux0/copyright", ("libqux.so.0",)),
    ]
    assert any("no SPDX license known for libbar2" in l for l in lines)
    assert any(l.startswith("bundled libfoo-plugin.so.1 from ") for l in lines)


def copy_root(tiny: TinyInputs, into: Path) -> Path:
    shutil.copytree(tiny.root.path, into, symlinks=True)
    return into


def test_a_library_missing_from_the_root_stops_staging(tmp_path, tiny):
    root = copy_root(tiny, tmp_path / "root")
    for f in (root / tiny.root.libdir.relative_to(tiny.root.path)).glob("libbar.so.2*"):
        f.unlink()
    with pytest.raises(BuildStepError, match=r"libraries not found in the runtime root .*: "
                                             r"libbar.so.2 \(needed by tiny-tool\)"):
        stage(tmp_path, tiny, root)


def test_a_library_no_package_owns_stops_staging(tmp_path, tiny):
    root = copy_root(tiny, tmp_path / "root")
    for f in (root / "var/lib/dpkg/info").glob("libqux0:*.list"):
        f.unlink()
    with pytest.raises(BuildStepError, match=r"no package of the runtime root owns .*libqux.so.0"):
        stage(tmp_path, tiny, root)


def test_a_dlopen_rule_whose_library_is_missing_stops_staging(tmp_path, tiny):
    root = copy_root(tiny, tmp_path / "root")
    for f in (root / tiny.root.libdir.relative_to(tiny.root.path)).glob("libfoo-plugin.so.1*"):
        f.unlink()
    with pytest.raises(ToolchainError, match=r"libfoo-plugin.so.1 \(libfoo opens its plugin\) is not in"):
        stage(tmp_path, tiny, root)
