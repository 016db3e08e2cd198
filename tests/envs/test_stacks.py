"""The ROCm stacks (builder/envs/stacks.py, resources/stacks.toml): pins, the archive's offers, stand-ins."""

import shutil
import subprocess

import pytest

from builder.envs import stacks
from builder.errors import ConfigurationError, PinnedPackageError
from tests.helpers.envs import REPO, stack_with


def test_default_stack_is_7_2_and_both_load():
    assert stacks.default_stack_name() == "7.2"
    s72, s64 = stacks.get_stack("7.2"), stacks.get_stack("6.4")
    pins72 = {p.name: p.version for p in s72.pins}
    assert pins72["hipcc"].startswith("7.2.4") and pins72["librocblas5"].startswith("7.2.4")
    assert pins72["clang-22"].startswith("1:22.")
    assert [s.name for s in s72.suites] == ["sid", "experimental"]
    assert s72.hip_offload_flags == "--offload-compress"
    assert {"gfx942", "gfx1151", "gfx1200", "gfx1201"} <= set(s72.rocblas_targets)
    assert not {"gfx1150", "gfx1152", "gfx1103"} & set(s72.rocblas_targets)
    (standin,) = s72.standins
    assert standin.soname == "librocsolver.so.0" and standin.consumer == "libhipblas.so.3"
    assert standin.return_value == 2
    # hipBLAS is installed only after its stand-in exists
    order = [s.kind for s in s72.steps]
    assert order.index("standin") < max(i for i, k in enumerate(order) if k == "install")
    assert "gfx942" not in s64.rocblas_targets
    with pytest.raises(ConfigurationError, match="unknown ROCm stack '5.7'"):
        stacks.get_stack("5.7")


def test_every_package_is_pinned_to_an_exact_version():
    for name in stacks.stack_names():
        for pin in stacks.get_stack(name).pins:
            assert pin.name and pin.version and "*" not in pin.version, (name, pin)


def test_malformed_stack_file_is_a_one_line_error(tmp_path):
    text = (REPO / "builder" / "resources" / "stacks.toml").read_text()
    bad = tmp_path / "stacks.toml"
    bad.write_text(text.replace('"hipcc=7.2.4+dfsg-1~exp1"', '"hipcc"'))
    with pytest.raises(ConfigurationError, match=r"stacks.toml: stack.7.2.step\[1\].packages\[0\]: .hipcc. does not match"):
        stacks.load_stacks(bad)
    bad.write_text(text.replace('default = "7.2"', 'default = "9.9"'))
    with pytest.raises(ConfigurationError, match="default stack '9.9' is not defined"):
        stacks.load_stacks(bad)
    bad.write_text(text.replace('  "make=4.4.1-2",\n', '  "make=4.4.1-2",\n  "make=4.4.1-3",\n', 1))
    with pytest.raises(ConfigurationError, match="pins these packages twice: make"):
        stacks.load_stacks(bad)


MADISON = """\
     hipcc | 7.2.4+dfsg-1~exp1 | http://mirror.invalid/debian experimental/main amd64 Packages
     hipcc |  7.0.2+dfsg-3 | http://mirror.invalid/debian sid/main amd64 Packages
     hipcc | 5.7.1-6+deb13u1 | http://mirror.invalid/debian trixie/main amd64 Packages
 xz-utils | 5.8.1-1+deb13u2 | http://mirror.invalid/debian trixie/main amd64 Packages
 xz-utils | 5.8.1-1+deb13u2 | http://security.invalid/debian-security trixie-security/main amd64 Packages
"""


def test_madison_output_is_read():
    offers = stacks.parse_madison(MADISON)
    assert offers["hipcc"] == [("7.2.4+dfsg-1~exp1", "experimental"), ("7.0.2+dfsg-3", "sid"),
                               ("5.7.1-6+deb13u1", "trixie")]
    assert offers["xz-utils"] == [("5.8.1-1+deb13u2", "trixie"), ("5.8.1-1+deb13u2", "trixie-security")]


def test_a_pin_the_archive_no_longer_serves_is_named_with_what_it_offers():
    pins = [stacks.Pin("hipcc", "7.2.4+dfsg-1~exp1"), stacks.Pin("xz-utils", "5.8.1-1+deb13u2")]
    assert stacks.missing_pins(pins, MADISON) == []
    gone = [stacks.Pin("hipcc", "6.4.3-1"), stacks.Pin("libfoo1", "1.0")]
    assert stacks.missing_pins(gone, MADISON) == [
        "hipcc: pinned 6.4.3-1, the archive offers 7.2.4+dfsg-1~exp1 (experimental), 7.0.2+dfsg-3 (sid), "
        "5.7.1-6+deb13u1 (trixie)",
        "libfoo1: pinned 1.0, the archive offers nothing"]
    stack = stack_with("7.2", steps=(stacks.InstallStep("x", tuple(gone)),))
    with pytest.raises(PinnedPackageError) as e:
        stacks.check_pins(stack, MADISON)
    assert "\n" not in str(e.value) and "hipcc: pinned 6.4.3-1" in str(e.value)
    assert e.value.return_code == 14


def test_standin_is_generated_from_the_consumers_undefined_names():
    nm = ("                 U rocsolver_sgetrf\n                 U rocsolver_dgels@ROCSOLVER_0\n"
          "                 U rocblas_sgemm\n                 w __gmon_start__\n")
    assert stacks.undefined_symbols(nm, "rocsolver_") == ["rocsolver_dgels", "rocsolver_sgetrf"]
    (step,) = stacks.get_stack("7.2").standins
    src = stacks.standin_source(step, ["rocsolver_dgels", "rocsolver_sgetrf"])
    assert "STANDIN rocsolver_sgetrf(void) { return 2; }" in src
    control = stacks.standin_control(step, "amd64")
    assert "Package: librocsolver0\nVersion: 7.2.4-1~exp1+moshibuild1\n" in control
    notice = stacks.standin_copyright(step.record(["rocsolver_sgetrf"]))
    assert "a moshi-build stand-in, not rocSOLVER 7.2.4" in notice and "License: MIT" in notice
    assert "The above copyright notice and this permission notice shall be included" in notice
    record = step.record(["rocsolver_sgetrf"])
    assert record["consumer"] == "libhipblas.so.3" and record["symbols"] == ["rocsolver_sgetrf"]


@pytest.mark.skipif(not shutil.which("gcc") or not shutil.which("nm"), reason="needs gcc and nm")
def test_standin_compiles_and_returns_not_implemented(tmp_path):
    (step,) = stacks.get_stack("7.2").standins
    (tmp_path / "s.c").write_text(stacks.standin_source(step, ["rocsolver_sgetrf", "rocsolver_dgels"]))
    lib = tmp_path / "librocsolver.so.0"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wl,-soname,librocsolver.so.0", "-o", str(lib),
                    str(tmp_path / "s.c")], check=True)
    import ctypes
    so = ctypes.CDLL(str(lib))
    assert so.rocsolver_sgetrf(1, 2, 3) == 2
    defined = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    assert "rocsolver_dgels" in defined

