"""The interface every build environment implements, and the probes they share."""

from __future__ import annotations

import abc
import contextlib
import re
import subprocess
from pathlib import Path
from typing import Mapping, Callable

from packaging.version import InvalidVersion, Version

from builder.common import resources
from builder.errors import ToolchainError
from builder.rocm import gfx, rocblas

# Bump when the probes below change what they record: cached info is then re-probed.
PROBE_VERSION = 2


def load_config() -> dict:
    """resources/environments.toml as a dict."""
    return resources.load("environments")


def parse_hip_version(text: str) -> Version:
    """'6.4.43484-9999' or '5.2.21153-0' (hipconfig --version) -> Version('6.4.43484')."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        raise ToolchainError(f"cannot read a HIP version from {text.strip()!r}")
    try:
        return Version(".".join(g for g in m.groups() if g is not None))
    except InvalidVersion:  # pragma: no cover - the regex only lets digits through
        raise ToolchainError(f"cannot read a HIP version from {text.strip()!r}") from None


def short_version(v: Version) -> str:
    return f"{v.major}.{v.minor}"


def parse_supported_cpus(text: str) -> set[str]:
    """gfx names in the output of `clang --target=amdgcn-amd-amdhsa --print-supported-cpus`
    (or `llc -mtriple=amdgcn -mcpu=help`)."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        # clang: one name per line; llc: "  gfx1100 - Select the gfx1100 processor."
        word = line.split(" ", 1)[0] if line else ""
        if gfx.is_gfx_name(word):
            names.add(word)
    return names


class EnvSession(abc.ABC):
    """A running environment: turns commands into commands that run inside it."""

    @abc.abstractmethod
    def wrap(self, argv: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
        """argv that runs `argv` inside the environment, in `cwd`, with exactly `env`."""

    def inside(self, path: Path) -> str:
        """Where a host path is seen by the commands of this session (the same path unless the
        session gave it a fixed place: see BuildEnvironment.session's `aliases`)."""
        return str(path)

    @abc.abstractmethod
    def base_env(self) -> dict[str, str]:
        """The environment variables a build inside starts from."""

    @abc.abstractmethod
    def supported_gpu_targets(self) -> set[str]:
        """gfx targets the environment's HIP compiler can generate code for."""

    @abc.abstractmethod
    def rocblas_kernel_targets(self) -> set[str]:
        """gfx targets the environment's rocBLAS ships Tensile kernels for."""

    def run(self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run a short command inside and capture its output (for probes, not builds)."""
        cwd = cwd or Path("/")
        wrapped = self.wrap(argv, cwd, self.base_env() if env is None else env)
        return subprocess.run(wrapped, cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=timeout)


class RootHome:
    """A root filesystem made once and kept in the cache: HOME/root, HOME/info.json once it
    is complete, a creation lock and .tmp staging folders beside HOME."""

    cache_dir: Path

    @property
    def home(self) -> Path:
        raise NotImplementedError

    @property
    def root(self) -> Path:
        return self.home / "root"

    @property
    def info_path(self) -> Path:
        return self.home / "info.json"

    def _lock_path(self) -> Path:
        return self.cache_dir / f".{self.home.name}.lock"

    def _tmp_dirs(self) -> list[Path]:
        return sorted(self.cache_dir.glob(f".{self.home.name}.*.tmp"))

    def exists(self) -> bool:
        """Complete: made, probed and renamed into place."""
        return self.info_path.is_file() and self.root.is_dir()


class BuildEnvironment(abc.ABC):
    """A kind of environment builds run in: the host's ROCm, or a Debian root filesystem."""

    name: str

    @abc.abstractmethod
    def identity(self) -> str:
        """A stable id for build-cache keys: changes when the toolchain does."""

    @abc.abstractmethod
    def ensure(self) -> None:
        """Make the environment usable (create or check); ToolchainError says what to do if not."""

    @abc.abstractmethod
    def info(self) -> dict:
        """Versions and paths: hip_version, clang_version, glibc_version, rocblas_library, ..."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Delete what ensure() created (nothing for the host)."""

    @abc.abstractmethod
    def session(self, shared_paths: list[Path], aliases: Mapping[Path, str] | None = None
                ) -> contextlib.AbstractContextManager[EnvSession]:
        """Context manager: a session in which host `shared_paths` are visible at the same paths.

        aliases: host directory -> the fixed path its commands see it at instead (an
        environment with its own root mounts it there and rewrites the paths in argv, env and
        cwd; the host cannot, and ignores them). The build cache gets one, so what the
        compilers write does not depend on where the cache lives (docs/REPRODUCIBLE.md)."""

    def exists(self) -> bool:
        """True when ensure() has nothing left to do (created, or found usable)."""
        try:
            self.info()
        except Exception:
            return False
        return True

    # Target sets, answered from cached info (fast: no process is started).
    def supported_gpu_targets(self) -> set[str]:
        return set(self.info().get("compiler_gpu_targets", []))

    def rocblas_kernel_targets(self) -> set[str]:
        return set(self.info().get("rocblas_kernel_targets", []))

    @property
    def rocblas_label(self) -> str:
        return rocblas.label(self.info().get("rocblas_version"))


def probe(run: Callable[[list[str]], subprocess.CompletedProcess], fs_root: Path) -> dict:
    """Ask a toolchain what it is. `run` runs argv in the environment; `fs_root` is where
    its files are seen from here ("/" for the host, the root filesystem for a chroot)."""

    def out(argv: list[str], with_stderr: bool = False) -> str | None:
        try:
            r = run(argv)
        except (OSError, subprocess.SubprocessError):
            return None
        if r.returncode != 0:
            return None
        return (r.stdout + (r.stderr if with_stderr else "")).strip()

    info: dict = {"probe_version": PROBE_VERSION}
    hip = out(["hipconfig", "--version"])
    info["hip_version_full"] = hip
    info["hip_version"] = str(parse_hip_version(hip)) if hip else None
    rocm = out(["hipconfig", "--rocmpath"]) or "/opt/rocm"
    info["rocm_path"] = rocm
    clang_dir = out(["hipconfig", "--hipclangpath"])
    info["hip_clang_path"] = clang_dir
    clang = f"{clang_dir}/clang" if clang_dir else "clang"
    version = out([clang, "--version"])
    info["clang"] = clang
    info["clang_version_full"] = version.splitlines()[0] if version else None
    m = re.search(r"clang version (\d+(?:\.\d+)*)", version or "")
    info["clang_version"] = m.group(1) if m else None
    # clang lists the processors of a target triple with --print-supported-cpus
    # (on stderr, as clang 21 does; stdout is read too).
    cpus = out([clang, "--target=amdgcn-amd-amdhsa", "--print-supported-cpus"], with_stderr=True)
    info["compiler_gpu_targets"] = sorted(parse_supported_cpus(cpus or ""))
    libc = out(["getconf", "GNU_LIBC_VERSION"])
    info["glibc_version"] = libc.split()[-1] if libc else None
    info["gcc_version"] = out(["gcc", "-dumpfullversion"])
    cmake = out(["cmake", "--version"])
    info["cmake_version"] = cmake.split()[2] if cmake and len(cmake.split()) > 2 else None
    rocm_root = fs_root / rocm.lstrip("/")
    lib = rocblas.find_kernel_folder([rocm_root] + ([fs_root / "usr"] if rocm != "/usr" else []))
    if lib is not None:
        info["rocblas_library"] = "/" + str(lib.relative_to(fs_root)) if fs_root != Path("/") else str(lib)
        info["rocblas_kernel_targets"] = sorted(rocblas.kernel_targets_in(lib))
        info["rocblas_version"] = rocblas.header_version(
            [rocm_root / "include"] + ([fs_root / "usr/include"] if rocm != "/usr" else []))
    else:
        info["rocblas_library"] = None
        info["rocblas_kernel_targets"] = []
        info["rocblas_version"] = None
    return info
