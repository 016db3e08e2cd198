"""The host's own ROCm as a build environment (builder/envs/host.py), and the choice between
host and Debian (builder.envs.get_environment)."""

import subprocess
from pathlib import Path

import pytest

from builder.rocm import targets
from builder.envs import DebianEnvironment, HostEnvironment, get_environment
from builder.errors import ConfigurationError, ToolchainError, TargetError
from tests.helpers.envs import script


def _fake_rocm(tmp_path: Path, version: str) -> Path:
    rocm = tmp_path / "rocm"
    clang_dir = rocm / "llvm" / "bin"
    script(rocm / "bin" / "hipconfig", f"""\
        case "$1" in
          --version) printf '%s' '{version}' ;;
          --rocmpath) printf '%s' '{rocm}' ;;
          --hipclangpath) printf '%s' '{clang_dir}' ;;
          *) exit 1 ;;
        esac
        """)
    script(clang_dir / "clang", """\
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
    script(tmp_path / "bin" / "hipconfig", "echo boom >&2; exit 3\n")
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

