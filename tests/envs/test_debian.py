"""The Debian build environment (builder/envs/debian.py): its key and home, mmdebstrap and the
apt set-up, atomic creation (with a stand-in mmdebstrap), sessions, and the real root (slow tier)."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from builder.rocm import targets
from builder.envs import DebianEnvironment, DebianSession, DebianSpec
from builder.envs import base, mounts, stacks
from builder.errors import PinnedPackageError, ToolchainError, TargetError
from tests.helpers.envs import IS_ROOT, REPO, needs_root, script, stack_with
from tests.helpers.slow import SHARED_CACHE


# -- the root's key: one root per ROCm stack ------------------------------------------------

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
    assert DebianEnvironment(tmp_path, stack=stack_with(**change)).key != DebianEnvironment(tmp_path).key


def test_a_changed_pin_changes_the_key(tmp_path):
    base = stacks.get_stack("7.2")
    step = base.steps[1]
    changed = dataclasses.replace(step, packages=(stacks.Pin("hipcc", "7.2.5"),) + step.packages[1:])
    other = dataclasses.replace(base, steps=(base.steps[0], changed) + base.steps[2:])
    assert DebianEnvironment(tmp_path, stack=other).key != DebianEnvironment(tmp_path, stack=base).key


def test_check_valid_until_does_not_change_the_key(tmp_path):
    assert DebianEnvironment(tmp_path, check_valid_until=True).key == DebianEnvironment(tmp_path).key


# -- mmdebstrap and apt's set-up ---------------------------------------------------------------

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
    """No archive is named anywhere: mmdebstrap and apt use their defaults (or the machine's mirror)."""
    sources = sorted((REPO / "builder" / "envs").glob("*.py"))
    assert len(sources) >= 5, "builder/envs has moved: point this test at the environments' sources"
    for path in sources + [REPO / "builder" / "resources" / "environments.toml",
                           REPO / "builder" / "resources" / "stacks.toml"]:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path
        assert not re.search(r"\b(?:[a-z0-9-]+\.)+(?:org|net|com|io)\b", text), path


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
    script(bindir / "mmdebstrap", """\
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


# -- sessions: command wrapping (mounts: test_mounts.py) -------------------------------------

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


def test_debian_session_rewrites_aliased_paths(tmp_path):
    """The cache seen at a fixed path inside the root: every argv word, env value and the cwd."""
    cache = tmp_path / "cache"
    s = DebianSession(tmp_path / "root", aliases={cache: "/moshi-build"})
    argv = s.wrap(["cmake", "-S", f"{cache}/sources/x", f"-DCMAKE_INSTALL_PREFIX={cache}/builds/x-1",
                   f"{cache}", f"{cache}-other/y", f"{cache}2", "/elsewhere"],
                  cache / "work" / "x", {"CFLAGS": f"-ffile-prefix-map={cache}=/moshi-build", "P": f"{cache}:{cache}/a"})
    cwd = argv[argv.index("-C") + 1]
    assert cwd == "/moshi-build/work/x"
    assert "CFLAGS=-ffile-prefix-map=/moshi-build=/moshi-build" in argv
    assert "P=/moshi-build:/moshi-build/a" in argv
    assert argv[-7:] == ["-S", "/moshi-build/sources/x", "-DCMAKE_INSTALL_PREFIX=/moshi-build/builds/x-1",
                         "/moshi-build", f"{cache}-other/y", f"{cache}2", "/elsewhere"]
    assert s.inside(cache / "builds" / "x") == "/moshi-build/builds/x"
    # only where a path starts: not inside a longer path, nor in one already rewritten
    short = DebianSession(tmp_path / "root", aliases={Path("/cache"): "/moshi-build"})
    assert [short._translate(t) for t in ("-I/cache/x", "/var/cache/ccache", "-I/usr/share/cache/x",
                                          "-Wl,-rpath,/cache/lib", "/cachex")] == \
        ["-I/moshi-build/x", "/var/cache/ccache", "-I/usr/share/cache/x", "-Wl,-rpath,/moshi-build/lib", "/cachex"]
    builds = DebianSession(tmp_path / "root", aliases={Path("/builds"): "/moshi-build"})
    assert builds._translate("--prefix=/moshi-build/builds/opus-1") == "--prefix=/moshi-build/builds/opus-1"
    assert s.inside(tmp_path / "other") == str(tmp_path / "other")
    assert DebianSession(tmp_path / "root").inside(cache) == str(cache)


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
def test_real_session_sees_an_aliased_folder_at_its_fixed_path(real_env, tmp_path):
    (tmp_path / "in.txt").write_text("from the host")
    with real_env.session([tmp_path], aliases={tmp_path: "/moshi-build"}) as s:
        r = s.run(["sh", "-c", "pwd; cat in.txt; echo; cat /moshi-build/in.txt; echo; echo made > out.txt"],
                  cwd=tmp_path)
        assert r.stdout.splitlines() == ["/moshi-build", "from the host", "from the host"], r.stderr
    assert (tmp_path / "out.txt").read_text() == "made\n"
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

