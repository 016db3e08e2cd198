"""The host's own ROCm: found through ROCM_PATH or `hipconfig` on PATH, used as it is."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from packaging.version import Version

from builder.envs.base import (
    BuildEnvironment, EnvSession, load_config, parse_hip_version, probe, short_version,
)
from builder.errors import ToolchainError


def min_hip_version() -> Version:
    return Version(load_config()["host"]["min_hip_version"])


def find_hipconfig(environ: dict[str, str] | None = None) -> Path | None:
    """ROCM_PATH/bin/hipconfig if ROCM_PATH is set, else `hipconfig` on PATH."""
    environ = os.environ if environ is None else environ
    rocm = environ.get("ROCM_PATH")
    if rocm:
        candidate = Path(rocm) / "bin" / "hipconfig"
        return candidate if os.access(candidate, os.X_OK) else None
    found = shutil.which("hipconfig", path=environ.get("PATH", os.defpath))
    return Path(found) if found else None


def hip_version_of(hipconfig: Path) -> Version:
    try:
        r = subprocess.run([str(hipconfig), "--version"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolchainError(f"{hipconfig} --version failed: {e}; fix the ROCm install or use --env debian") from None
    if r.returncode != 0:
        raise ToolchainError(
            f"{hipconfig} --version failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[:200]}; "
            "fix the ROCm install or use --env debian"
        )
    return parse_hip_version(r.stdout)


class HostSession(EnvSession):
    def __init__(self, env: "HostEnvironment") -> None:
        self._env = env

    def wrap(self, argv: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
        # The command itself is unchanged; `env -i -C` only pins its cwd and environment,
        # so the caller need not pass them to Popen.
        return ["env", "-i", "-C", str(cwd), *(f"{k}={v}" for k, v in env.items()), *argv]

    def base_env(self) -> dict[str, str]:
        return dict(os.environ)

    def supported_gpu_targets(self) -> set[str]:
        return self._env.supported_gpu_targets()

    def rocblas_kernel_targets(self) -> set[str]:
        return self._env.rocblas_kernel_targets()


class HostEnvironment(BuildEnvironment):
    name = "host"

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._info: dict | None = None

    # -- detection ---------------------------------------------------------
    def hipconfig(self) -> Path:
        found = find_hipconfig(self._environ)
        if found is None:
            where = (f"ROCM_PATH={self._environ['ROCM_PATH']} has no bin/hipconfig"
                     if self._environ.get("ROCM_PATH") else "no hipconfig on PATH and ROCM_PATH is not set")
            raise ToolchainError(
                f"no ROCm on this machine ({where}); use --env debian, which builds in a Debian "
                f"root filesystem with ROCm 6.4, or install ROCm >= {min_hip_version()}"
            )
        return found

    def hip_version(self) -> Version:
        return hip_version_of(self.hipconfig())

    def usable(self) -> bool:
        """True if a ROCm new enough is found (no exception, for automatic selection)."""
        try:
            self.ensure()
        except ToolchainError:
            return False
        return True

    def exists(self) -> bool:
        return self.usable()

    # -- interface ---------------------------------------------------------
    def ensure(self) -> None:
        hipconfig = self.hipconfig()
        version = hip_version_of(hipconfig)
        needed = min_hip_version()
        if version < needed:
            raise ToolchainError(
                f"found HIP {short_version(version)} at {hipconfig}; ggml's HIP backend needs "
                f"HIP >= {needed}: install ROCm >= {needed} or use --env debian"
            )

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        env = dict(self._environ)
        bindir = str(self.hipconfig().parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", os.defpath)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", env=env, timeout=120)

    def info(self) -> dict:
        if self._info is None:
            self.ensure()
            info = probe(self._run, Path("/"))
            info.update(kind="host", root="/", hipconfig=str(self.hipconfig()), rocm_stack="host",
                        # ROCm 7 runtimes read compressed device code; older ones get it plain.
                        hip_offload_flags="--offload-compress"
                        if info.get("hip_version") and Version(info["hip_version"]) >= Version("7.0") else "",
                        standins=[])
            self._info = info
        return dict(self._info)

    def identity(self) -> str:
        info = self.info()
        keyed = {k: info.get(k) for k in ("hip_version_full", "rocm_path", "clang_version_full",
                                           "glibc_version", "gcc_version", "rocblas_library")}
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
        return f"host-hip{info.get('hip_version')}-{digest}"

    def remove(self) -> None:
        raise ToolchainError("the host environment is the machine's own ROCm: moshi-build does not remove it")

    @contextlib.contextmanager
    def session(self, shared_paths: list[Path], aliases=None) -> Iterator[HostSession]:
        # The host runs commands where the files are: no aliases, so host builds carry the
        # cache's real path (its length, HIP's CUIDs) and are reproducible only at one path.
        self.ensure()
        yield HostSession(self)
