import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from builder.rocm import targets
from builder.envs import (
    DebianEnvironment, DebianSession, DebianSpec, HostEnvironment, get_environment,
)
from builder.envs import base, debian, mounts, stacks
from builder.errors import ConfigurationError, PinnedPackageError, ToolchainError, TargetError
from tests.helpers.mounts import FakeMounter
from tests.helpers.slow import SHARED_CACHE

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mount, chroot)")


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(text))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# -- the ROCm stacks and the root's key -----------------------------------------------

def _stack(name: str | None = None, **changes) -> stacks.RocmStack:
    return dataclasses.replace(stacks.get_stack(name), **changes)


def test_key_is_stable_and_names_the_stack(tmp_path):
    a = DebianEnvironment(tmp_path)
    b = DebianEnvironment(tmp_path, stack=stacks.get_stack(None))
    assert a.key == b.key
    assert a.home == b.home
    assert a.home.parent == tmp_path
    assert a.home.name == f"debian-rocm{stacks.default_stack_name()}-trixie-{a.key}"


def test_each_stack_has_its_own_root(tmp_path):
    homes = {DebianEnvironment(tmp_path, stack=name).home for name in stacks.stack_names()}
    assert len(homes) == len(stacks.stack_names()) >= 2


@pytest.mark.parametrize("change", [
    {"base_suite": "forky"},
    {"suites": (stacks.Suite("sid", 500),)},
    {"hip_offload_flags": ""},
    {"steps": ()},
])
def test_key_changes_with_the_stack(tmp_path, change):
    assert DebianEnvironment(tmp_path, stack=_stack(**change)).key != DebianEnvironment(tmp_path).key


def test_a_changed_pin_changes_the_key(tmp_path):
    base = stacks.get_stack("7.2")
    step = base.steps[1]
    changed = dataclasses.replace(step, packages=(stacks.Pin("hipcc", "7.2.5"),) + step.packages[1:])
    other = dataclasses.replace(base, steps=(base.steps[0], changed) + base.steps[2:])
    assert DebianEnvironment(tmp_path, stack=other).key != DebianEnvironment(tmp_path, stack=base).key


def test_check_valid_until_does_not_change_the_key(tmp_path):
    assert DebianEnvironment(tmp_path, check_valid_until=True).key == DebianEnvironment(tmp_path).key


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
    stack = _stack("7.2", steps=(stacks.InstallStep("x", tuple(gone)),))
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


def test_mmdebstrap_argv(tmp_path):
    env = DebianEnvironment(tmp_path)
    argv = env.mmdebstrap_argv(tmp_path / "x" / "root")
    assert argv[0] == "mmdebstrap"
    assert argv[-2:] == ["trixie", str(tmp_path / "x" / "root")]
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in argv
    assert '--aptopt=APT::Default-Release "trixie"' in argv
    assert any(a.startswith("--setup-hook=") for a in argv)
    # The stack's steps install everything after mmdebstrap, with exact versions.
    assert not any(a.startswith("--include") for a in argv)
    # No mirror is named: mmdebstrap uses its default.
    assert not any("://" in a for a in argv)
    checked = DebianEnvironment(tmp_path, check_valid_until=True).mmdebstrap_argv(tmp_path / "r")
    assert not any("Check-Valid-Until" in a for a in checked)


def test_no_registry_host_names_in_the_sources():
    for path in list((REPO / "builder" / "environments").glob("*.py")) + [
            REPO / "builder" / "resources" / "environments.toml", REPO / "builder" / "resources" / "stacks.toml"]:
        text = path.read_text()
        assert "deb.debian.org" not in text and "http://" not in text and "https://" not in text, path


@pytest.mark.parametrize("fmt", ["one-line", "deb822"])
def test_setup_hook_adds_the_stacks_suites_and_pins_them(tmp_path, fmt):
    root = tmp_path / "root"
    apt = root / "etc" / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    if fmt == "one-line":
        (apt / "sources.list").write_text(
            "deb http://mirror.invalid/debian trixie main\n"
            "deb http://mirror.invalid/debian trixie-updates main\n"
            "deb http://mirror.invalid/debian-security trixie-security main\n")
    else:
        (apt / "sources.list.d" / "debian.sources").write_text(
            "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: trixie trixie-updates\nComponents: main\n")
    hook = DebianSpec(stacks.get_stack("7.2")).setup_hook()
    subprocess.run(["sh", "-c", hook, "exec", str(root)], check=True)
    if fmt == "one-line":
        lines = (apt / "sources.list").read_text().splitlines()
        assert lines[:3] == ["deb http://mirror.invalid/debian trixie main",
                             "deb http://mirror.invalid/debian sid main",
                             "deb http://mirror.invalid/debian experimental main"]
        assert len(lines) == 5
    else:
        assert "Suites: trixie sid experimental trixie-updates" in (
            apt / "sources.list.d" / "debian.sources").read_text()
    pin = (apt / "preferences.d" / "50-moshi-build.pref").read_text()
    assert pin == ("Package: *\nPin: release n=sid\nPin-Priority: 100\n\n"
                   "Package: *\nPin: release a=sid\nPin-Priority: 100\n\n"
                   "Package: *\nPin: release n=experimental\nPin-Priority: 50\n\n"
                   "Package: *\nPin: release a=experimental\nPin-Priority: 50\n")


def test_setup_hook_fails_without_a_base_suite_line(tmp_path):
    apt = tmp_path / "etc" / "apt"
    apt.mkdir(parents=True)
    (apt / "sources.list").write_text("deb http://mirror.invalid/debian bookworm main\n")
    hook = DebianSpec(stacks.get_stack("7.2")).setup_hook()
    r = subprocess.run(["sh", "-c", hook, "exec", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "no trixie line" in r.stderr


def test_targets_before_the_root_exists_come_from_the_stack(tmp_path):
    env = DebianEnvironment(tmp_path, stack="7.2")
    assert env.supported_gpu_targets() is None
    assert "gfx1201" in env.rocblas_kernel_targets()
    targets.check_targets(["gfx1201", "gfx942", "gfx1151"], env)
    with pytest.raises(TargetError, match="gfx1150: rocBLAS of ROCm stack 7.2 ships no kernels for it"):
        targets.check_targets(["gfx1150"], env)
    with pytest.raises(TargetError, match="gfx942: rocBLAS of ROCm stack 6.4 ships no kernels"):
        targets.check_targets(["gfx942"], DebianEnvironment(tmp_path, stack="6.4"))


def test_not_created_environment(tmp_path):
    env = DebianEnvironment(tmp_path)
    assert not env.exists()
    with pytest.raises(ToolchainError, match="not created yet"):
        env.info()
    with pytest.raises(ToolchainError, match="not created yet"):
        with env.session([]):
            pass


# -- atomic creation with a stand-in mmdebstrap ------------------------------------------

FAKE_INFO = {"probe_version": base.PROBE_VERSION, "hip_version": "7.2.53211", "clang_version": "22.1.8",
             "compiler_gpu_targets": ["gfx1100", "gfx942"],
             "rocblas_kernel_targets": sorted(stacks.get_stack(None).rocblas_targets),
             "glibc_version": "2.41", "installed_packages": {"librocblas5": "7.2.4-1~exp1"}}


@pytest.fixture
def fake_mmdebstrap(tmp_path, monkeypatch):
    """mmdebstrap on PATH that makes a tiny 'root' (or fails / hangs, per FAKE_MODE)."""
    bindir = tmp_path / "fakebin"
    _script(bindir / "mmdebstrap", """\
        for last; do :; done
        echo "I: fake mmdebstrap $FAKE_MODE"
        case "$FAKE_MODE" in
          fail) echo "E: Unable to locate package hipcc"; exit 1 ;;
          expired) echo "E: Release file for x is expired (invalid since 1d). Updates for this repository will not be applied."; exit 1 ;;
          hang) mkdir -p "$last/usr"; echo started > "$FAKE_STARTED"; sleep 60; exit 0 ;;
        esac
        mkdir -p "$last/usr/bin" "$last/proc" && echo hello > "$last/usr/bin/marker"
        """)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(DebianEnvironment, "_probe", lambda self, root: dict(FAKE_INFO))
    # The stack's apt steps need a real root and the archive: the slow tier runs them.
    monkeypatch.setattr(DebianEnvironment, "_fill", lambda self, root, logf: None)
    return bindir


@needs_root
def test_creation_renames_into_place(tmp_path, fake_mmdebstrap, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "ok")
    envs = tmp_path / "envs"
    env = DebianEnvironment(envs, echo=lambda m: None)
    env.ensure()
    assert env.exists()
    assert (env.root / "usr/bin/marker").read_text() == "hello\n"
    assert json.loads(env.info_path.read_text())["hip_version"] == "7.2.53211"
    assert json.loads((env.home / "spec.json").read_text())["stack"]["base_suite"] == "trixie"
    assert [p.name for p in envs.iterdir() if p.name.endswith(".tmp")] == []
    assert env.supported_gpu_targets() == {"gfx1100", "gfx942"}
    assert env.rocblas_label == "Debian's rocBLAS 7.2"
    assert json.loads((env.home / "packages.json").read_text()) == {"librocblas5": "7.2.4-1~exp1"}
    assert "installed_packages" not in env.info()
    ident = env.identity()
    assert ident.startswith(f"debian-rocm7.2-trixie-{env.key}-") and ident == DebianEnvironment(envs).identity()
    # A second ensure() reuses it.
    monkeypatch.setenv("FAKE_MODE", "fail")
    env.ensure()
    # And remove() takes it away.
    env.remove()
    assert not env.home.exists() and not list(envs.glob("*.tmp"))


@needs_root
def test_failed_creation_leaves_nothing_complete(tmp_path, fake_mmdebstrap, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail")
    envs = tmp_path / "envs"
    env = DebianEnvironment(envs, echo=lambda m: None)
    with pytest.raises(ToolchainError) as e:
        env.ensure()
    assert "mmdebstrap failed (exit 1)" in str(e.value)
    assert "Unable to locate package hipcc" in str(e.value)
    assert not env.home.exists()
    assert not list(envs.glob("*.tmp"))
    assert (envs / f"{env.home.name}.failed.log").exists()


@needs_root
def test_expired_release_files_are_explained(tmp_path, fake_mmdebstrap, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "expired")
    env = DebianEnvironment(tmp_path / "envs", check_valid_until=True, echo=lambda m: None)
    with pytest.raises(ToolchainError, match="Valid-Until"):
        env.ensure()


@needs_root
def test_leftovers_of_a_killed_creation_are_removed(tmp_path, fake_mmdebstrap, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "ok")
    envs = tmp_path / "envs"
    env = DebianEnvironment(envs, echo=lambda m: None)
    stale = envs / f".{env.home.name}.abc123.tmp"
    (stale / "root" / "usr").mkdir(parents=True)
    # A half-made home without info.json does not count as complete either.
    (env.home / "root").mkdir(parents=True)
    assert not env.exists()
    env.ensure()
    assert env.exists() and not stale.exists()


@needs_root
def test_ctrl_c_during_creation(tmp_path, fake_mmdebstrap):
    envs = tmp_path / "envs"
    started = tmp_path / "started"
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from builder.envs import DebianEnvironment
        DebianEnvironment._probe = lambda self, root: {{}}
        try:
            DebianEnvironment(Path({str(envs)!r}), echo=lambda m: None).ensure()
        except KeyboardInterrupt:
            print("interrupted"); sys.exit(130)
    """)
    env = dict(os.environ, FAKE_MODE="hang", FAKE_STARTED=str(started), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists()
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in out
    assert not DebianEnvironment(envs).exists()
    assert not list(envs.glob("*.tmp"))


# -- host ROCm detection ---------------------------------------------------------------------

def _fake_rocm(tmp_path: Path, version: str) -> Path:
    rocm = tmp_path / "rocm"
    clang_dir = rocm / "llvm" / "bin"
    _script(rocm / "bin" / "hipconfig", f"""\
        case "$1" in
          --version) printf '%s' '{version}' ;;
          --rocmpath) printf '%s' '{rocm}' ;;
          --hipclangpath) printf '%s' '{clang_dir}' ;;
          *) exit 1 ;;
        esac
        """)
    _script(clang_dir / "clang", """\
        case "$*" in
          *--print-supported-cpus*) printf 'Available CPUs for this target:\\n\\n\\tgfx1030\\n\\tgfx1100\\n\\tgfx942\\n\\tgfx9-generic\\n\\ttahiti\\n' >&2 ;;
          *--version*) echo "AMD clang version 19.0.0git" ;;
        esac
        """)
    lib = rocm / "lib" / "rocblas" / "library"
    lib.mkdir(parents=True)
    for name in ("TensileLibrary_lazy_gfx1100.dat", "Kernels.so-000-gfx1030.hsaco",
                 "TensileLibrary_Type_SS_Contraction_l_Alik_Bljk_Cijk_Dijk_fallback.dat"):
        (lib / name).write_text("")
    return rocm


def test_host_refuses_old_hip(tmp_path):
    rocm = _fake_rocm(tmp_path, "5.2.21153-0")
    host = HostEnvironment({"PATH": f"{rocm / 'bin'}:/usr/bin:/bin"})
    with pytest.raises(ToolchainError) as e:
        host.ensure()
    assert str(e.value) == (
        f"found HIP 5.2 at {rocm / 'bin' / 'hipconfig'}; ggml's HIP backend needs HIP >= 6.1: "
        "install ROCm >= 6.1 or use --env debian"
    )
    assert not host.usable()


def test_host_accepts_new_hip_and_probes_it(tmp_path):
    rocm = _fake_rocm(tmp_path, "6.4.43484-9999")
    host = HostEnvironment({"PATH": f"{rocm / 'bin'}:/usr/bin:/bin"})
    host.ensure()
    assert host.usable()
    info = host.info()
    assert info["hip_version"] == "6.4.43484"
    assert info["rocm_path"] == str(rocm)
    assert info["clang_version"] == "19.0.0"
    assert host.supported_gpu_targets() == {"gfx1030", "gfx1100", "gfx942"}
    assert host.rocblas_kernel_targets() == {"gfx1030", "gfx1100"}
    assert info["rocblas_library"] == str(rocm / "lib" / "rocblas" / "library")
    assert host.identity().startswith("host-hip6.4.43484-")
    targets.check_targets(["gfx1100"], host)
    with pytest.raises(TargetError, match="gfx942: rocBLAS ships no kernels|gfx942: this environment's rocBLAS"):
        targets.check_targets(["gfx942"], host)


def test_host_via_rocm_path(tmp_path):
    rocm = _fake_rocm(tmp_path, "6.2.41133-0")
    host = HostEnvironment({"ROCM_PATH": str(rocm), "PATH": "/usr/bin:/bin"})
    host.ensure()
    bad = HostEnvironment({"ROCM_PATH": str(tmp_path / "nothing"), "PATH": f"{rocm / 'bin'}:/usr/bin:/bin"})
    with pytest.raises(ToolchainError, match="has no bin/hipconfig"):
        bad.ensure()


def test_host_without_rocm_points_to_debian(tmp_path):
    host = HostEnvironment({"PATH": str(tmp_path)})
    with pytest.raises(ToolchainError) as e:
        host.ensure()
    assert "no ROCm on this machine" in str(e.value) and "--env debian" in str(e.value)


def test_host_with_broken_hipconfig(tmp_path):
    _script(tmp_path / "bin" / "hipconfig", "echo boom >&2; exit 3\n")
    with pytest.raises(ToolchainError, match="exit 3"):
        HostEnvironment({"PATH": str(tmp_path / "bin")}).ensure()


def test_get_environment_chooses(tmp_path, monkeypatch):
    envs = tmp_path / "envs"
    old = _fake_rocm(tmp_path / "old", "5.7.31921-0")
    new = _fake_rocm(tmp_path / "new", "6.4.43484-9999")
    assert get_environment(None, envs, environ={"PATH": f"{new / 'bin'}:/usr/bin"}).name == "host"
    assert get_environment("auto", envs, environ={"PATH": f"{old / 'bin'}:/usr/bin"}).name == "debian"
    assert get_environment(None, envs, environ={"PATH": str(tmp_path)}).name == "debian"
    # Asked for explicitly, the host is returned as it is; ensure() says what is wrong.
    host = get_environment("host", envs, environ={"PATH": f"{old / 'bin'}:/usr/bin"})
    with pytest.raises(ToolchainError, match="found HIP 5.7"):
        host.ensure()
    deb = get_environment("debian", envs, check_valid_until=True)
    assert isinstance(deb, DebianEnvironment) and deb.check_valid_until and deb.cache_dir == envs
    with pytest.raises(ConfigurationError, match="unknown build environment 'docker'"):
        get_environment("docker", envs)


def test_host_session_wrap_sets_cwd_and_env(tmp_path):
    rocm = _fake_rocm(tmp_path, "6.4.43484-9999")
    host = HostEnvironment({"PATH": f"{rocm / 'bin'}:/usr/bin:/bin"})
    with host.session([tmp_path]) as s:
        argv = s.wrap(["sh", "-c", 'pwd; echo "$FOO"; echo "${HOME:-unset}"'], tmp_path,
                      {"FOO": "bar baz", "PATH": "/usr/bin:/bin"})
        assert argv[-3:] == ["sh", "-c", 'pwd; echo "$FOO"; echo "${HOME:-unset}"']
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [str(tmp_path), "bar baz", "unset"]


# -- probes --------------------------------------------------------------------------------

def test_parse_hip_version():
    assert str(base.parse_hip_version("6.4.43484-9999")) == "6.4.43484"
    assert str(base.parse_hip_version("5.2.21153-")) == "5.2.21153"
    with pytest.raises(ToolchainError):
        base.parse_hip_version("HIP")


def test_parse_supported_cpus_clang_and_llc():
    clang = "Available CPUs for this target:\n\n\tgfx1010\n\tgfx10-3-generic\n\tgfx90a\n\ttahiti\n\nUse -mcpu"
    assert base.parse_supported_cpus(clang) == {"gfx1010", "gfx90a"}
    llc = "Available CPUs for this target:\n\n  gfx1100    - Select the gfx1100 processor.\n  gfx942 - x\n"
    assert base.parse_supported_cpus(llc) == {"gfx1100", "gfx942"}


# -- sessions: command wrapping and mounts ----------------------------------------------------

def test_debian_wrap(tmp_path):
    s = DebianSession(tmp_path / "root", extra_env={"HIP_PLATFORM": "amd"})
    argv = s.wrap(["cmake", "--build", "."], Path("/work/b"), {"PATH": "/usr/bin", "A": "1 2"})
    assert argv[1:] == [str(tmp_path / "root"), "/usr/bin/env", "-i", "-C", "/work/b",
                        "PATH=/usr/bin", "A=1 2", "cmake", "--build", "."]
    assert Path(argv[0]).name == "chroot"
    odd = s.wrap(["/weird=name"], Path("/"), {})
    assert odd[-5:] == ["/bin/sh", "-c", 'exec "$@"', "sh", "/weird=name"]
    env = s.base_env()
    assert env["PATH"].startswith("/usr/local/sbin") and env["HIP_PLATFORM"] == "amd"
    assert "ROCM_PATH" not in env  # clang-21 would look for device libraries there


@pytest.fixture
def shared(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    a = tmp_path / "cache"
    b = a / "builds"
    c = tmp_path / "src"
    for p in (a, b, c):
        p.mkdir(parents=True, exist_ok=True)
    return root, a, b, c


def test_mounted_order_and_same_paths(shared):
    root, a, b, c = shared
    m = FakeMounter()
    with debian.mounted(root, [b, c, a, a], m) as done:
        assert m.calls == [
            ("proc", root / "proc"),
            # parents before children; otherwise in the order given, duplicates dropped
            ("bind", c, root / str(c).lstrip("/")),
            ("bind", a, root / str(a).lstrip("/")),
            ("bind", b, root / str(b).lstrip("/")),
        ]
        for p in (a, b, c):
            assert (root / str(p).lstrip("/")).is_dir()
        mounted_targets = list(done)
    assert [call[1] for call in m.calls[4:]] == list(reversed(mounted_targets))
    assert all(call[0] == "umount" for call in m.calls[4:])


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_mounted_unmounts_on_exceptions(shared, exc):
    root, a, b, c = shared
    m = FakeMounter()
    with pytest.raises(exc):
        with debian.mounted(root, [a, c], m):
            raise exc()
    assert [call[0] for call in m.calls] == ["proc", "bind", "bind", "umount", "umount", "umount"]
    assert m.calls[-1] == ("umount", root / "proc")


def test_mounted_undoes_a_partial_setup(shared):
    root, a, b, c = shared
    m = FakeMounter(fail_on=c)
    with pytest.raises(ToolchainError):
        with debian.mounted(root, [a, c], m):
            pytest.fail("body must not run")
    assert m.calls == [("proc", root / "proc"), ("bind", a, root / str(a).lstrip("/")),
                       ("umount", root / str(a).lstrip("/")), ("umount", root / "proc")]


@pytest.mark.parametrize("other_thread", [False, True])
def test_ctrl_c_during_setup_is_delivered_after_it(shared, other_thread):
    # With another thread alive (tqdm's monitor, say) the kernel may hand a
    # process-directed SIGINT to that thread; it must be held back all the same.
    root, a, b, c = shared
    stop = threading.Event()
    if other_thread:
        threading.Thread(target=stop.wait, daemon=True).start()
    m = FakeMounter(on_bind=lambda src: os.kill(os.getpid(), signal.SIGINT) if src == a else None)
    body_ran = False
    with pytest.raises(KeyboardInterrupt):
        with debian.mounted(root, [a, c], m):
            body_ran = True
    stop.set()
    assert not body_ran
    # Both binds finished before the interrupt landed, and all three mounts were undone.
    assert [call[0] for call in m.calls] == ["proc", "bind", "bind", "umount", "umount", "umount"]


def test_mounted_refuses_bad_paths(shared, tmp_path):
    root, a, b, c = shared
    for bad, words in ((root / "x", "inside the environment's root"), (Path("/"), "cannot share /"),
                       (tmp_path / "missing", "does not exist")):
        if bad == root / "x":
            bad.mkdir()
        with pytest.raises(ToolchainError, match=words):
            with debian.mounted(root, [bad], FakeMounter()):
                pass


def test_mounted_refuses_symlinks_inside_root(shared):
    root, a, b, c = shared
    first = Path(str(a).lstrip("/")).parts[0]
    (root / first).symlink_to("/")  # an absolute symlink inside the root would lead out
    m = FakeMounter()
    with pytest.raises(ToolchainError, match="is a symlink inside it"):
        with debian.mounted(root, [a], m):
            pass
    assert m.calls[-1] == ("umount", root / "proc")


def test_ctrl_c_in_a_subprocess_unmounts(shared, tmp_path):
    root, a, b, c = shared
    log = tmp_path / "mounts.log"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tests.helpers.mounts import FakeMounter
        from builder.envs import debian
        m = FakeMounter(log={str(log)!r})
        try:
            with debian.mounted(Path({str(root)!r}), [Path({str(a)!r}), Path({str(c)!r})], m):
                print("ready", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    lines = [l.split()[0] for l in log.read_text().splitlines()]
    assert lines == ["proc", "bind", "bind", "umount", "umount", "umount"]
    assert log.read_text().splitlines()[-1] == f"umount {root / 'proc'}"


def test_mountinfo_parsing(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "90 27 0:21 / /x/root/proc rw - proc proc rw\n"
        "91 27 8:1 /a /x/root/my\\040dir rw - ext4 /dev/vda rw\n"
        "92 27 8:1 /a /x/rootfs rw - ext4 /dev/vda rw\n")
    assert mounts.mounts_under(Path("/x/root"), info) == [Path("/x/root/proc"), Path("/x/root/my dir")]
    assert mounts.is_mount_point(Path("/proc"), info)


@needs_root
def test_real_mounts_on_a_scratch_root(shared, tmp_path):
    root, a, b, c = shared
    (a / "file").write_text("shared")
    with debian.mounted(root, [a]) as done:
        assert mounts.mounts_under(root) == done
        assert (root / "proc" / "self").exists()
        assert (root / str(a).lstrip("/") / "file").read_text() == "shared"
    assert mounts.mounts_under(root) == []
    assert not (root / "proc" / "self").exists()


@needs_root
def test_safe_rmtree_does_not_delete_through_a_bind_mount(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    doomed = tmp_path / "doomed"
    (doomed / "inner").mkdir(parents=True)
    mounts.bind_mount(keep, doomed / "inner")
    try:
        mounts.safe_rmtree(doomed)
    finally:
        if mounts.is_mount_point(doomed / "inner"):
            mounts.unmount(doomed / "inner")
    assert not doomed.exists()
    assert (keep / "precious").read_text() == "x"


# -- the real Debian root (minutes the first time, then reused) ---------------------------------

REAL_ENVS = SHARED_CACHE / "envs"


@pytest.fixture(scope="module")
def real_env():
    if not IS_ROOT:
        pytest.skip("the debian environment needs root")
    if not shutil.which("mmdebstrap") and not shutil.which("apt-get"):
        pytest.skip("mmdebstrap is not available and cannot be installed here")
    env = DebianEnvironment(REAL_ENVS)
    try:
        env.ensure()
    except ToolchainError as e:
        if "mmdebstrap is missing" in str(e):
            pytest.skip(str(e))
        raise
    return env


@pytest.mark.slow
def test_real_root_info(real_env):
    info = real_env.info()
    # The default stack, 7.2: ROCm 7.2.4 from experimental with clang-22, on trixie's glibc.
    assert info["hip_version"].startswith("7.2")
    assert info["clang_version"].startswith("22.")
    assert info["glibc_version"] == "2.41"
    assert info["rocblas_library"] == "/usr/lib/x86_64-linux-gnu/rocblas/5/library"
    assert {"gfx1100", "gfx1030", "gfx90a", "gfx942", "gfx1151", "gfx1200", "gfx1201"} <= \
        real_env.rocblas_kernel_targets()
    assert not {"gfx1150", "gfx1152", "gfx1103"} & real_env.rocblas_kernel_targets()
    assert {"gfx942", "gfx1100", "gfx1201", "gfx1151"} <= real_env.supported_gpu_targets()
    assert real_env.rocblas_label == "Debian's rocBLAS 7.2"
    # Every package is recorded with its exact version; the pins hold; the stand-in is there.
    packages = real_env.installed_packages()
    assert packages["libc6"].startswith("2.41-")
    for pin in stacks.get_stack("7.2").pins:
        assert packages.get(pin.name) == pin.version, pin
    (standin,) = info["standins"]
    assert packages["librocsolver0"] == standin["version"] == "7.2.4-1~exp1+moshibuild1"
    assert len(standin["symbols"]) > 50 and all(n.startswith("rocsolver_") for n in standin["symbols"])
    lib = real_env.root / "usr/lib/x86_64-linux-gnu/librocsolver.so.0"
    defined = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    assert all(n in defined for n in standin["symbols"])


@pytest.mark.slow
def test_real_root_checks_targets_fast(real_env):
    start = time.monotonic()
    fresh = DebianEnvironment(REAL_ENVS)  # nothing cached in memory
    fresh.ensure()
    targets.check_targets(["gfx1100", "gfx1030"], fresh)
    targets.check_targets(["gfx942", "gfx1151", "gfx1201"], fresh)
    with pytest.raises(TargetError, match="gfx1150: Debian's rocBLAS 7.2 ships no kernels for it; "
                                          "targets this environment supports: gfx803 gfx900"):
        targets.check_targets(["gfx1150"], fresh)
    assert time.monotonic() - start < 5


@pytest.mark.slow
def test_real_session_runs_hipconfig_and_unmounts(real_env, tmp_path):
    (tmp_path / "in.txt").write_text("from the host")
    with real_env.session([tmp_path]) as s:
        assert mounts.is_mount_point(real_env.root / "proc")
        r = s.run(["hipconfig", "--version"])
        assert r.returncode == 0 and r.stdout.startswith("7.2"), r.stderr
        r = s.run(["sh", "-c", "pwd; cat in.txt; echo made inside > out.txt"], cwd=tmp_path)
        assert r.stdout.splitlines() == [str(tmp_path), "from the host"]
        r = s.run(["getconf", "GNU_LIBC_VERSION"])
        assert r.stdout.strip() == "glibc 2.41"
    assert (tmp_path / "out.txt").read_text() == "made inside\n"
    assert mounts.mounts_under(real_env.root) == []


@pytest.mark.slow
def test_real_hipcc_compiles_a_kernel(real_env, tmp_path):
    (tmp_path / "k.hip").write_text(
        "#include <hip/hip_runtime.h>\n__global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n"
        "int main() { float* d; (void)hipMalloc(&d, 64); k<<<1, 16>>>(d); return 0; }\n")
    with real_env.session([tmp_path]) as s:
        r = s.run(["hipcc", "--offload-arch=gfx1100", "-o", "k", "k.hip"], cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "k").stat().st_size > 0
    assert mounts.mounts_under(real_env.root) == []


@pytest.mark.slow
def test_real_session_ctrl_c_unmounts(real_env, tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from builder.envs import DebianEnvironment
        env = DebianEnvironment(Path({str(REAL_ENVS)!r}))
        try:
            with env.session([Path({str(tmp_path)!r})]) as s:
                print("ready", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "ready"
    assert mounts.is_mount_point(real_env.root / "proc")
    assert mounts.is_mount_point(real_env.root / str(tmp_path).lstrip("/"))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert mounts.mounts_under(real_env.root) == []


@pytest.mark.slow
def test_real_stale_mounts_are_cleaned(real_env, tmp_path):
    # A session killed with SIGKILL cannot unmount; the next session does it.
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from builder.envs import DebianEnvironment
        with DebianEnvironment(Path({str(REAL_ENVS)!r})).session([Path({str(tmp_path)!r})]):
            print("ready", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    assert mounts.mounts_under(real_env.root)
    with real_env.session([]) as s:
        assert mounts.mounts_under(real_env.root) == [real_env.root / "proc"]
    assert mounts.mounts_under(real_env.root) == []


@pytest.mark.slow
@needs_root
@pytest.mark.timeout(900)
def test_a_pin_the_real_archive_no_longer_serves_stops_creation(tmp_path):
    """Against the real archive: a bare root is made, the pins are checked before anything is
    installed, and the one-line error names the package, its pin and what is offered now."""
    base = stacks.get_stack("7.2")
    first = base.steps[0]
    stale = dataclasses.replace(first, packages=(stacks.Pin("hipcc", "6.4.3-1"),) + first.packages[1:])
    stack = dataclasses.replace(base, steps=(stale,) + base.steps[1:])
    envs = tmp_path / "envs"
    env = DebianEnvironment(envs, stack=stack, echo=print)
    start = time.monotonic()
    with pytest.raises(PinnedPackageError) as e:
        env.ensure()
    print(e.value, f"({time.monotonic() - start:.0f} s)")
    message = str(e.value)
    assert "\n" not in message
    assert "ROCm stack 7.2: hipcc: pinned 6.4.3-1, the archive offers 7.2.4+dfsg-1~exp1 (experimental)" in message
    assert "(trixie)" in message and "update the pins in builder/resources/stacks.toml" in message
    assert not env.exists() and not list(envs.glob(".*.tmp")) and not env.home.exists()
