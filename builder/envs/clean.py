"""A clean Debian root filesystem to install wheels into: a user's machine, in a folder.

It has Python with venv and nothing else of ours: no ROCm, no compiler, no
FFmpeg, no SDL2 (resources/environments.toml, [clean]). Made by mmdebstrap with
its default mirror, atomically (a temporary sibling renamed into place), under
CACHE/envs/clean-<suite>-<key>/root, and reused while its package list is the
same. Wheels are installed into fresh venvs inside it with pip, offline; every
command runs in it with chroot, in a private mount namespace with its own
/proc (the loader resolves $ORIGIN through /proc/self/exe), so nothing stays
mounted when the command ends.

    root = CleanRoot(cache.envs)
    root.ensure()                                  # about a minute the first time
    venv = root.install([wheel], "gfx1100")        # /opt/moshi-build/gfx1100 inside
    venv.run(["moshi-tts", "-l"])                  # PATH starts with the venv's bin
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from builder.envs import mounts
from builder.envs.base import RootHome, load_config
from builder.common.files import file_lock
from builder.envs.debian import _dpkg_architecture, _stderr, _tree_size
from builder.common.process import failure, run_logged
from builder.errors import DiskFullError, ToolchainError

LAYOUT_VERSION = 1
INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENVS_DIR = Path("/opt/moshi-build")


@dataclasses.dataclass(frozen=True)
class CleanSpec:
    suite: str
    variant: str
    packages: tuple[str, ...]
    architecture: str = dataclasses.field(default_factory=_dpkg_architecture)

    @classmethod
    def from_config(cls, section: dict) -> "CleanSpec":
        return cls(suite=section["suite"], variant=section["variant"], packages=tuple(section["packages"]))

    def to_json(self) -> dict:
        return {"layout_version": LAYOUT_VERSION, "suite": self.suite, "variant": self.variant,
                "architecture": self.architecture, "packages": sorted(set(self.packages))}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")
    if not found:
        raise ToolchainError(f"{name} is missing on this machine; install util-linux / coreutils")
    return found


# Runs as `sh -c SCRIPT sh CHROOT ROOT CMD...` inside `unshare --mount`: the proc mount
# lives only in that namespace and disappears with it.
_ENTER = 'c=$1; r=$2; shift 2; mount -t proc proc "$r/proc" && exec "$c" "$r" "$@"'


@dataclasses.dataclass
class InstalledVenv:
    """A venv inside the clean root with wheels installed; paths are the root's own."""

    clean_root: "CleanRoot"
    prefix: Path          # e.g. /opt/moshi-build/gfx1100

    @property
    def bindir(self) -> Path:
        return self.prefix / "bin"

    @property
    def python(self) -> Path:
        return self.bindir / "python"

    def host_path(self, inner: Path | str) -> Path:
        return self.clean_root.host_path(inner)

    def run(self, argv: Sequence, env: dict[str, str] | None = None, cwd: Path | str = "/",
            timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        base = {"PATH": f"{self.bindir}:{INNER_PATH}", "VIRTUAL_ENV": str(self.prefix)}
        return self.clean_root.run(argv, env={**base, **(env or {})}, cwd=cwd, timeout=timeout, input=input)

    def site_packages(self) -> Path:
        """The venv's site-packages, as a path inside the root."""
        found = sorted(self.host_path(self.prefix).glob("lib/python3*/site-packages"))
        if not found:
            raise ToolchainError(f"{self.prefix} has no site-packages")
        return Path("/") / found[0].relative_to(self.clean_root.root)

    def remove(self) -> None:
        shutil.rmtree(self.host_path(self.prefix), ignore_errors=True)


class CleanRoot(RootHome):
    """The clean root filesystem (see the module docstring)."""

    def __init__(self, cache_dir: Path, check_valid_until: bool = False, *, config: dict | None = None,
                 echo: Callable[[str], None] = _stderr, suite: str | None = None) -> None:
        section = (config or load_config())["clean"]
        self.cache_dir = Path(os.path.abspath(cache_dir))
        self.check_valid_until = check_valid_until
        if suite is not None and suite != section["suite"] and suite not in section.get("suites", ()):
            raise ToolchainError(f"no clean root for the suite {suite!r}: environments.toml [clean] suites are "
                                 f"{', '.join(section.get('suites', ())) or 'none'}")
        self.spec = CleanSpec.from_config({**section, **({"suite": suite} if suite else {})})
        self.min_free_gib = float(section.get("min_free_gib", 2))
        self.echo = echo

    @property
    def home(self) -> Path:
        return self.cache_dir / f"clean-{self.spec.suite}-{self.spec.key()}"

    def info(self) -> dict:
        if not self.exists():
            raise ToolchainError(f"the clean root filesystem is not created yet (it goes to {self.home})")
        return json.loads(self.info_path.read_text())

    def host_path(self, inner: Path | str) -> Path:
        return self.root / os.path.abspath(str(inner)).lstrip("/")

    # -- creation ---------------------------------------------------------------
    def mmdebstrap_argv(self, target: Path) -> list[str]:
        argv = ["mmdebstrap", "--mode=root", f"--variant={self.spec.variant}"]
        if not self.check_valid_until:
            # The registry serves stale Release files here; apt refuses them unless told not to check.
            argv.append('--aptopt=Acquire::Check-Valid-Until "false"')
        argv += [f"--include={','.join(self.spec.packages)}", self.spec.suite, str(target)]
        return argv

    def ensure(self) -> None:
        if self.exists():
            return
        if os.geteuid() != 0:
            raise ToolchainError("the clean root filesystem needs root (mmdebstrap, chroot); run as root")
        if not shutil.which("mmdebstrap"):
            raise ToolchainError("mmdebstrap is missing; `moshi-build env create` installs it, or apt-get "
                                 "install mmdebstrap")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self._lock_path(), waiting=f"waiting for another creation of {self.home} ...",
                    echo=self.echo):
            if self.exists():
                return
            for stale in [self.home, *self.cache_dir.glob(f".{self.home.name}.*.tmp")]:
                if stale.exists():
                    self.echo(f"removing leftovers of an interrupted creation: {stale}")
                    mounts.safe_rmtree(stale)
            st = os.statvfs(self.cache_dir)
            if st.f_bavail * st.f_frsize / 2**30 < self.min_free_gib:
                raise DiskFullError(f"less than {self.min_free_gib:.0f} GiB free at {self.cache_dir} for the clean "
                                    "root filesystem; free some space or point --cache-dir elsewhere")
            self._create()

    def _create(self) -> None:
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.home.name}.", suffix=".tmp", dir=self.cache_dir))
        tmp.chmod(0o755)  # apt's download user must reach root/var/lib/apt/lists
        log = tmp / "mmdebstrap.log"
        try:
            argv = self.mmdebstrap_argv(tmp / "root")
            self.echo(f"creating the clean root filesystem in {self.home} ({self.spec.suite}, "
                      f"{', '.join(self.spec.packages)}; about a minute)")
            code = run_logged(argv, log)
            if code != 0:
                text = log.read_text(errors="replace")
                kept = self.cache_dir / f"{self.home.name}.failed.log"
                shutil.copyfile(log, kept)
                if "No space left on device" in text:
                    raise DiskFullError(f"no space left while creating the clean root filesystem in "
                                        f"{self.cache_dir}; free some space and run again (log: {kept})")
                raise ToolchainError(failure("mmdebstrap", code, log, kept, context="creating the clean root filesystem"))
            probe = subprocess.run([_tool("chroot"), str(tmp / "root"), "/usr/bin/python3", "-c",
                                    "import platform, sys; print(sys.version.split()[0]); "
                                    "print(platform.libc_ver()[1])"],
                                   capture_output=True, text=True)
            if probe.returncode != 0:
                raise ToolchainError(f"python3 does not run in the new clean root: {probe.stderr.strip()[-300:]}")
            python, glibc = probe.stdout.split()
            info = {"kind": "clean", "spec": self.spec.to_json(), "python_version": python,
                    "glibc_version": glibc, "created_seconds": round(time.monotonic() - start, 1),
                    "size_bytes": _tree_size(tmp / "root"), "root": str(self.root)}
            (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
            os.replace(tmp, self.home)
            self.echo(f"clean root filesystem ready in {info['created_seconds']:.0f} s: Python {python}, "
                      f"glibc {glibc}, {info['size_bytes'] / 1e6:.0f} MB")
        except BaseException:
            with contextlib.suppress(Exception):
                mounts.safe_rmtree(tmp)
            raise

    def remove(self) -> None:
        with file_lock(self._lock_path()):
            if self.home.exists():
                mounts.safe_rmtree(self.home)

    # -- use ----------------------------------------------------------------------
    def run(self, argv: Sequence, env: dict[str, str] | None = None, cwd: Path | str = "/",
            timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the root with only the given environment (plus PATH, HOME, LANG)."""
        base = {"PATH": INNER_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        assignments = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        cmd = ["/usr/bin/env", "-i", "-C", str(cwd), *assignments, *map(str, argv)]
        return subprocess.run([_tool("unshare"), "--mount", "--propagation", "private", "sh", "-c", _ENTER, "sh",
                               _tool("chroot"), str(self.root), *cmd],
                              capture_output=True, text=True, errors="replace", timeout=timeout, input=input,
                              env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def install(self, wheels: Iterable[Path], name: str, requirements: Sequence[str] = (),
                wheel_cache: Path | None = None, by_name: Sequence[str] = ()) -> InstalledVenv:
        """A fresh venv at /opt/moshi-build/<name> with `wheels` installed by pip, offline.

        `requirements` (e.g. numpy) are downloaded on this machine by pip (its configured
        index) as wheels for the root's Python into `wheel_cache`, then installed from there.
        by_name: install these project names instead of the wheel files, the way a user does
        (`pip install --no-index --find-links DIR moshi-rocm-gfx1100` finds the base it requires).
        """
        self.ensure()
        wheels = [Path(w) for w in wheels]
        venv = InstalledVenv(self, VENVS_DIR / name)
        venv.remove()
        drop = Path("/tmp") / f"moshi-build-wheels-{name}-{os.getpid()}"
        shutil.rmtree(self.host_path(drop), ignore_errors=True)
        self.host_path(drop).mkdir(parents=True)
        try:
            for w in wheels:
                shutil.copy(w, self.host_path(drop) / w.name)
            if requirements:
                self._download_requirements(requirements, self.host_path(drop), wheel_cache)
            r = self.run(["python3", "-m", "venv", venv.prefix])
            if r.returncode != 0:
                raise ToolchainError(f"python3 -m venv failed in the clean root: {(r.stderr or r.stdout).strip()[-400:]}")
            r = venv.run(["python", "-m", "pip", "install", "--no-index", "--find-links", drop, "--quiet",
                          *(by_name or [drop / w.name for w in wheels]), *requirements],
                         env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
            if r.returncode != 0:
                raise ToolchainError(f"pip install failed in the clean root: {(r.stderr or r.stdout).strip()[-800:]}")
        finally:
            shutil.rmtree(self.host_path(drop), ignore_errors=True)
        return venv

    def _download_requirements(self, requirements: Sequence[str], into: Path, wheel_cache: Path | None) -> None:
        info = self.info()
        py = "".join(info["python_version"].split(".")[:2])
        major, minor = (int(x) for x in info["glibc_version"].split(".")[:2])
        arch = os.uname().machine
        platforms = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]
        cache = wheel_cache or (self.cache_dir / f"{self.home.name}-wheels")
        cache.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", py,
                "--implementation", "cp", "-d", str(cache), *(f"--platform={p}" for p in platforms), *requirements]
        r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        if r.returncode != 0:
            raise ToolchainError(f"pip download {' '.join(requirements)} for Python {info['python_version']} "
                                 f"failed: {(r.stderr or r.stdout).strip()[-400:]}")
        for f in cache.glob("*.whl"):
            shutil.copy(f, into / f.name)
