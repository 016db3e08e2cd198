"""linkage.external_closure: the libraries auditwheel will graft, found in a root filesystem.

Real ELF files compiled here (tests/helpers/elf.py) in a fake root: the payload's
tool loads libfoo from the root, which loads libbar; what the closure must name,
leave out, report as missing and follow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.package import linkage
from tests.helpers.elf import HAVE_GCC, FakeRoot, gcc

pytestmark = pytest.mark.skipif(not HAVE_GCC, reason="needs gcc")

TOOL = '#include <stdio.h>\nint foo(void);\nint main(void) { printf("%d\\n", foo()); return 0; }\n'
VENDOR_DIR = "/opt/moshi-build-test-vendor/lib"   # absolute, as the root's libraries see it


def closure_of(files, root: FakeRoot, payload: Path) -> linkage.Closure:
    return linkage.external_closure(files, root.path, linkage.library_dirs(root.path), payload)


@pytest.fixture
def root(tmp_path) -> FakeRoot:
    """libfoo.so.1 -> libbar.so.2 (both real files with SONAME symlinks), and a fake libz.so.1
    (a name every manylinux policy lets the system provide) that libfoo links too."""
    r = FakeRoot(tmp_path / "root")
    bar = r.library("libbar.so.2", "int bar(void) { return 2; }\n")
    z = r.library("libz.so.1", "int zlibVersion(void) { return 1; }\n", minor="2.13")
    r.library("libfoo.so.1", "int bar(void); int zlibVersion(void);\n"
              "int foo(void) { return bar() + zlibVersion(); }\n", libs=(bar, z))
    return r


def test_library_dirs_follow_ld_so_conf_then_the_trusted_ones(root):
    dirs = linkage.library_dirs(root.path)
    assert dirs[0] == root.libdir                      # through ld.so.conf's include
    assert root.path / "usr/lib" in dirs and root.path / "lib" in dirs
    assert all(d.is_relative_to(root.path) for d in dirs)


def test_closure_names_the_root_libraries_by_soname_with_their_real_files(root, tmp_path):
    payload = tmp_path / "payload"
    # Our own library, next to the tool ($ORIGIN), needs libbar as well.
    own = gcc(payload / "bin" / "libown.so", "int bar(void); int own(void) { return bar(); }\n",
              libs=(root.libdir / "libbar.so.2",), rpath="$ORIGIN", runpath=True)
    tool = gcc(payload / "bin" / "tool", TOOL.replace("return 0", "return own()").replace(
        "int foo(void);", "int foo(void); int own(void);"), shared=False, rpath="$ORIGIN", runpath=True,
        libs=(root.libdir / "libfoo.so.1", own))

    closure = closure_of([tool, own], root, payload)

    assert sorted(closure.libraries) == ["libbar.so.2", "libfoo.so.1"]
    foo, bar = closure.libraries["libfoo.so.1"], closure.libraries["libbar.so.2"]
    assert foo.path == root.libdir / "libfoo.so.1"                 # where the linker finds it
    assert foo.realpath == root.libdir / "libfoo.so.1.0.0"         # the file auditwheel copies
    assert bar.realpath == root.libdir / "libbar.so.2.0.0"
    assert foo.needed_by == {"tool"}
    assert bar.needed_by == {"tool", "libown.so"}                  # through libfoo, and directly
    # libown.so is the payload's own; libz and libc are the system's under every manylinux policy
    assert {"libz.so.1", "libc.so.6"} <= linkage.manylinux_whitelist()
    assert not {"libown.so", "libz.so.1", "libc.so.6"} & (set(closure.libraries) | set(closure.unresolved))
    assert closure.unresolved == {} and closure.outside_root == {}
    assert closure.directories == [root.libdir]
    assert [l.soname for l in closure.matching("libfoo.so.*")] == ["libfoo.so.1"]


def test_a_library_missing_from_the_root_is_unresolved(root, tmp_path):
    gone = root.library("libgone.so.1", "int gone(void) { return 0; }\n")
    qux = root.library("libqux.so.3", "int gone(void); int qux(void) { return gone(); }\n", libs=(gone,))
    (root.libdir / "libgone.so.1.0.0").unlink()
    gone.unlink()
    tool = gcc(tmp_path / "payload" / "tool", TOOL + "int qux(void); int use(void) { return qux(); }\n",
               shared=False, libs=(root.libdir / "libfoo.so.1", qux), extra=("-Wl,--allow-shlib-undefined",))

    closure = closure_of([tool], root, tmp_path / "payload")

    assert closure.unresolved == {"libgone.so.1": {"tool"}}
    assert sorted(closure.libraries) == ["libbar.so.2", "libfoo.so.1", "libqux.so.3"]


def test_an_absolute_runpath_of_a_root_library_is_followed_inside_the_root(root, tmp_path):
    if Path(VENDOR_DIR).exists():
        pytest.skip(f"{VENDOR_DIR} exists on this machine")
    vendor_dir = root.path / VENDOR_DIR.lstrip("/")
    vendor = root.library("libvendor.so.5", "int vendor(void) { return 5; }\n", folder=vendor_dir)
    # libvendor is in no folder of ld.so.conf: only libplug's RUNPATH leads to it.
    plug = root.library("libplug.so.1", "int vendor(void); int plug(void) { return vendor(); }\n",
                        libs=(vendor,), runpath=VENDOR_DIR)
    tool = gcc(tmp_path / "payload" / "tool", TOOL + "int plug(void); int use(void) { return plug(); }\n",
               shared=False, libs=(root.libdir / "libfoo.so.1", plug), link_dirs=(vendor_dir,))

    closure = closure_of([tool], root, tmp_path / "payload")

    assert closure.unresolved == {}
    lib = closure.libraries["libvendor.so.5"]
    assert lib.path == vendor_dir / "libvendor.so.5" and lib.realpath == vendor_dir / "libvendor.so.5.0.0"
    assert lib.needed_by == {"tool"}
    assert vendor_dir in closure.directories


def test_a_library_whose_symlink_leads_out_of_the_root_is_reported(root, tmp_path):
    elsewhere = gcc(tmp_path / "elsewhere" / "libout.so.1.0", "int out(void) { return 1; }\n",
                    soname="libout.so.1", rpath=None)
    (root.libdir / "libout.so.1").symlink_to(elsewhere)   # an absolute link, seen from the host
    tool = gcc(tmp_path / "payload" / "tool", TOOL + "int out(void); int use(void) { return out(); }\n",
               shared=False, libs=(root.libdir / "libfoo.so.1", root.libdir / "libout.so.1"))

    closure = closure_of([tool], root, tmp_path / "payload")

    assert closure.outside_root == {"libout.so.1": elsewhere}
    assert "libout.so.1" not in closure.libraries


def test_find_library_skips_a_copy_built_for_another_architecture(tmp_path):
    """auditwheel's reading of ld.so.conf lists /usr/lib32 (Debian's i386 copies) first: the
    i386 libstdc++.so.6 there must not be taken for the x86_64 one."""
    real = gcc(tmp_path / "x86_64" / "libthing.so.1", "int thing(void) { return 1; }\n", soname="libthing.so.1")
    i386 = tmp_path / "lib32" / "libthing.so.1"
    i386.parent.mkdir()
    header = bytearray(real.read_bytes()[:64])
    header[4], header[18:20] = 1, (3).to_bytes(2, "little")     # ELFCLASS32, EM_386
    i386.write_bytes(bytes(header))
    assert linkage.find_library("libthing.so.1", [i386.parent, real.parent]) == real
    assert linkage.find_library("libthing.so.1", [i386.parent]) is None
