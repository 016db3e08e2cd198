"""A Debian root filesystem with a ROCm stack (resources/stacks.toml), made by mmdebstrap
and entered with chroot.

Layout under the cache dir given to the constructor (normally CACHE/envs):

  debian-rocm<stack>-<base>-<key>/   one complete environment (never half-made)
    root/                            the root filesystem
    info.json                        probed versions, paths, gfx target sets, stand-ins
    packages.json                    every Debian package installed, with its version
    spec.json                        the stack it was made from
    create.log                       how it was made (mmdebstrap, then the stack's steps)
    session.lock                     held (shared) by every session using it
  .debian-rocm<stack>-<base>-<key>.lock    held while it is being created or removed
  .debian-rocm<stack>-<base>-<key>.*.tmp/  work in progress; removed by the next ensure()

<key> hashes the ROCm stack (suites, pinned packages, steps; resources/stacks.toml),
so a changed stack makes a new root and an unchanged one is reused. The root is made
in a temporary sibling and renamed into place only when it is complete and
probed, so an interrupted creation never counts as complete.

The base suite and its default mirror come from mmdebstrap; a setup hook adds
the stack's extra suites (sid, experimental) of the same mirror by copying the
base suite's line of etc/apt/sources.list, and pins them low. Then the stack's
steps run inside: every pin is checked against `apt-cache madison` first, then
exact NAME=VERSION installs and generated stand-ins, in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

from packaging.version import Version

from builder.envs import mounts
from builder.envs.base import (
    PROBE_VERSION, BuildEnvironment, EnvSession, RootHome, probe,
)
from builder.envs.stacks import (
    STANDIN_RECORD_DIR, InstallStep, RocmStack, StandinStep, check_pins, get_stack, standin_control,
    standin_copyright, standin_source, undefined_symbols,
)
from builder.common.process import failure, run_logged
from builder.common.files import file_lock
from builder.errors import DiskFullError, PinnedPackageError, ToolchainError
from builder.rocm import rocblas

# Bump when the way a root is made changes (hook, options) so existing roots are not reused.
LAYOUT_VERSION = 1
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class DebianSpec:
    """What a root is made of (a ROCm stack of resources/stacks.toml); its key names the root."""

    stack: RocmStack
    architecture: str = dataclasses.field(default_factory=lambda: _dpkg_architecture())

    @property
    def base_suite(self) -> str:
        return self.stack.base_suite

    @property
    def extra_suites(self) -> list[str]:
        return [s.name for s in self.stack.suites]

    def to_json(self) -> dict:
        return {"layout_version": LAYOUT_VERSION, "architecture": self.architecture,
                "stack": self.stack.to_json()}

    def key(self) -> str:
        payload = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def setup_hook(self) -> str:
        """Shell for --setup-hook ($1 is the new root): add the extra suites, pin each low.

        The mirror is whatever mmdebstrap chose for the base suite: the hook copies
        that line with the suite name replaced, in one-line or deb822 format.
        """
        base = self.base_suite
        extras = self.extra_suites
        if not extras:
            return "true"
        copies = "".join(f"\\n\\1{e}\\3" for e in extras)
        # n= (codename) matches sid; experimental's codename is rc-buggy, so a= (suite) too.
        pref = "\\n".join(f"Package: *\\nPin: release {field}={s.name}\\nPin-Priority: {s.priority}\\n"
                           for s in self.stack.suites for field in ("n", "a"))
        checks = [
            f'grep -qE "^(deb(\\s+\\[[^]]*\\])?\\s+\\S+\\s+{e}(\\s|$)|Suites:.*\\s{e}(\\s|$))" '
            f'"$S" "$D"/*.sources 2>/dev/null || {{ echo "setup hook: no {base} line to copy for {e}" >&2; exit 1; }}'
            for e in extras]
        return "; ".join([
            "set -e",
            'S="$1/etc/apt/sources.list"',
            'D="$1/etc/apt/sources.list.d"',
            # one-line format: "deb [opts] URI trixie main" -> also "deb [opts] URI sid main", ...
            f'if [ -s "$S" ]; then sed -i -E "s/^(deb(\\s+\\[[^]]*\\])?\\s+\\S+\\s+){base}(\\s.*)?$/&{copies}/" "$S"; fi',
            # deb822 format: "Suites: trixie trixie-updates" -> "Suites: trixie sid ... trixie-updates"
            f'for f in "$D"/*.sources; do [ -e "$f" ] || continue; '
            f'sed -i -E "s/^(Suites:.*\\s){base}(\\s|$)/\\1{base} {" ".join(extras)}\\2/" "$f"; done',
            *checks,
            'mkdir -p "$1/etc/apt/preferences.d"',
            f'printf "{pref}" > "$1/etc/apt/preferences.d/50-moshi-build.pref"',
        ])


def _dpkg_architecture() -> str:
    try:
        r = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, timeout=30)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


# -- mounting ---------------------------------------------------------------

class Mounter:
    """The mount operations a session needs; tests substitute a recording fake."""

    def mount_proc(self, target: Path) -> None:
        mounts.mount_proc(target)

    def bind(self, source: Path, target: Path) -> None:
        mounts.bind_mount(source, target)

    def unmount(self, target: Path) -> None:
        mounts.unmount(target)


def _inside(root: Path, path: Path) -> Path:
    return root / os.path.abspath(path).lstrip("/")


def _check_no_symlinks(root: Path, path: Path) -> None:
    """Refuse to create or mount on `path` inside `root` through a symlink there
    (an absolute symlink would point back out to the host)."""
    cur = root
    for part in Path(os.path.abspath(path)).parts[1:]:
        cur = cur / part
        if cur.is_symlink():
            raise ToolchainError(
                f"cannot share {path} with the root filesystem {root}: {cur} is a symlink inside it; "
                "share a path that is a plain directory inside the root"
            )


def normalize_shared_paths(root: Path, shared_paths: list[Path]) -> list[Path]:
    """Absolute, existing, deduplicated, parents first; never the root itself or anything in it."""
    root = Path(os.path.abspath(root))
    out: list[Path] = []
    for p in shared_paths:
        p = Path(os.path.abspath(p))
        if p == Path("/"):
            raise ToolchainError("cannot share / with the build environment; share specific directories")
        if p == root or root in p.parents:
            raise ToolchainError(f"cannot share {p}: it is inside the environment's root {root}")
        if not p.exists():
            raise ToolchainError(f"cannot share {p} with the build environment: it does not exist")
        if p not in out:
            out.append(p)
    return sorted(out, key=lambda p: len(p.parts))


@contextlib.contextmanager
def mounted(root: Path, shared_paths: list[Path], mounter: Mounter | None = None,
            proc: bool = True, aliases: Mapping[Path, str] | None = None) -> Iterator[list[Path]]:
    """Mount proc at ROOT/proc, bind each shared path at ROOT/<same path> and each aliased
    host directory at ROOT/<its alias> too; undo it all, newest first, however the block
    ends (exception, KeyboardInterrupt, SIGTERM-as-exception).

    Mounting and unmounting run with SIGINT/SIGTERM held back, so a Ctrl-C lands
    between the two, never in the middle of either.
    """
    mounter = mounter or Mounter()
    root = Path(os.path.abspath(root))
    paths = normalize_shared_paths(root, shared_paths)
    done: list[Path] = []
    try:
        with mounts.signals_held():
            if proc:
                target = root / "proc"
                target.mkdir(exist_ok=True)
                mounter.mount_proc(target)
                done.append(target)
            for p, at in [(p, p) for p in paths] + [(Path(os.path.abspath(h)), Path(a))
                                                      for h, a in sorted((aliases or {}).items())]:
                _check_no_symlinks(root, at)
                target = _inside(root, at)
                if p.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch(exist_ok=True)
                mounter.bind(p, target)
                done.append(target)
        yield list(done)
    finally:
        errors = []
        with mounts.signals_held():
            for target in reversed(done):
                try:
                    mounter.unmount(target)
                except Exception as e:  # keep unmounting the others
                    errors.append(e)
        if errors and sys.exc_info()[0] is None:
            raise errors[0]


# -- the session --------------------------------------------------------------

class DebianSession(EnvSession):
    def __init__(self, root: Path, env: "DebianEnvironment | None" = None,
                 extra_env: dict[str, str] | None = None, aliases: Mapping[Path, str] | None = None) -> None:
        self.root = root
        self._env = env
        self._extra_env = dict(extra_env or {})
        # Longest first: a host directory inside another aliased one keeps its own alias.
        self._aliases = sorted(((os.path.abspath(h), str(a)) for h, a in (aliases or {}).items()),
                               key=lambda item: -len(item[0]))
        # A host path counts where a path starts: at the start of a word, after a separator
        # (=, :, ;, comma, blank, quote) or after a two-letter flag (-I/…, -L/…); never inside a
        # longer path (/var/cache/x for a cache at /cache) or in an already rewritten one.
        start = r"""(?:(?<=^)|(?<=[=:;,\s"'])|(?<=^-[A-Za-z])|(?<=[\s=,]-[A-Za-z]))"""
        self._alias_re = (re.compile("|".join(f"{start}({re.escape(h)})(?=/|$|[^A-Za-z0-9._+-])"
                                              for h, _ in self._aliases)) if self._aliases else None)

    def inside(self, path: Path) -> str:
        return self._translate(os.path.abspath(path))

    def _translate(self, text: str) -> str:
        """Every aliased host directory named in `text` (a path, a -DVAR=PATH, a flag) -> its alias."""
        if self._alias_re is None:
            return text
        return self._alias_re.sub(lambda m: self._aliases[m.lastindex - 1][1], text)

    def wrap(self, argv: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
        if not argv:
            raise ValueError("empty command")
        argv = [self._translate(str(a)) for a in argv]
        env = {k: self._translate(str(v)) for k, v in env.items()}
        cwd = self._translate(str(cwd))
        cmd = list(argv)
        if "=" in cmd[0]:  # env(1) would take it for an assignment
            cmd = ["/bin/sh", "-c", 'exec "$@"', "sh", *cmd]
        assignments = [f"{k}={v}" for k, v in env.items()]
        return [shutil.which("chroot") or "/usr/sbin/chroot", str(self.root),
                "/usr/bin/env", "-i", "-C", str(cwd), *assignments, *cmd]

    def base_env(self) -> dict[str, str]:
        env = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "SHELL": "/bin/sh"}
        env.update(self._extra_env)
        return env

    def supported_gpu_targets(self) -> set[str]:
        return self._env.supported_gpu_targets() if self._env else set()

    def rocblas_kernel_targets(self) -> set[str]:
        return self._env.rocblas_kernel_targets() if self._env else set()


def _hip_env(info: dict) -> dict[str, str]:
    """Variables for hipcc inside the root.

    Not ROCM_PATH: clang-21 honours it, and Debian's ROCM_PATH (/usr) has no
    amdgcn/bitcode (the device libraries live under /usr/lib/llvm-21/lib/clang/21),
    so `ROCM_PATH=/usr` breaks every HIP compile ("cannot find ROCm device
    library"). info()["rocm_path"] says where ROCm is for CMake's -DROCM_PATH.
    """
    env = {"HIP_PLATFORM": "amd"}
    if info.get("hip_clang_path"):
        env["HIP_CLANG_PATH"] = info["hip_clang_path"]
    return env


# -- locks --------------------------------------------------------------------

# -- the environment ----------------------------------------------------------

class DebianEnvironment(RootHome, BuildEnvironment):
    name = "debian"

    def __init__(self, cache_dir: Path, check_valid_until: bool = False, *,
                 stack: RocmStack | str | None = None, echo: Callable[[str], None] = _stderr,
                 mounter: Mounter | None = None) -> None:
        self.stack = stack if isinstance(stack, RocmStack) else get_stack(stack)
        self.cache_dir = Path(os.path.abspath(cache_dir))
        self.check_valid_until = check_valid_until
        self.spec = DebianSpec(self.stack)
        self.min_free_gib = self.stack.min_free_gib
        self.min_hip = Version(self.stack.min_hip_version)
        self.echo = echo
        self.mounter = mounter or Mounter()
        self._info: dict | None = None

    # -- paths ------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.spec.key()

    @property
    def home(self) -> Path:
        return self.cache_dir / f"debian-rocm{self.stack.name}-{self.spec.base_suite}-{self.key}"

    # -- interface --------------------------------------------------------------
    def identity(self) -> str:
        """debian-<base>-<key>-<digest of every installed package version>: a root made again
        from the same lists but with newer packages gets a new identity."""
        digest = self.info().get("packages_digest") or "unknown"
        return f"debian-rocm{self.stack.name}-{self.spec.base_suite}-{self.key}-{digest[:12]}"

    def info(self) -> dict:
        if self._info is None:
            if not self.exists():
                raise ToolchainError(
                    f"the debian build environment is not created yet (it goes to {self.home}); "
                    "create it first (moshi-build env create; about 2 minutes, 3-6 GB)"
                )
            self._info = json.loads(self.info_path.read_text())
        return dict(self._info)

    def installed_packages(self) -> dict[str, str]:
        """{package: version} of every Debian package in the root (recorded when it was made)."""
        self.info()
        return json.loads((self.home / "packages.json").read_text())

    # Before the root exists, the stack's data answers for rocBLAS; the compiler is unknown.
    def supported_gpu_targets(self) -> set[str] | None:
        return super().supported_gpu_targets() if self.exists() else None

    def rocblas_kernel_targets(self) -> set[str]:
        return super().rocblas_kernel_targets() if self.exists() else set(self.stack.rocblas_targets)

    @property
    def rocblas_label(self) -> str:
        if not self.exists():
            return rocblas.stack_label(self.stack.name)
        return rocblas.debian_label(self.info().get("packages", {}))

    def ensure(self) -> None:
        if self.exists():
            self._refresh_info_if_stale()
            return
        self._require_root()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self._lock_path(), waiting=f"waiting for another moshi-build creating {self.home} ...", echo=self.echo):
            if self.exists():  # made by someone else while we waited
                return
            if self.home.exists():
                self.echo(f"removing the incomplete environment {self.home}")
                mounts.safe_rmtree(self.home)
            for stale in self._tmp_dirs():
                self.echo(f"removing leftovers of an interrupted creation: {stale}")
                mounts.safe_rmtree(stale)
            self._check_free_space()
            self._ensure_host_tools()
            self._create()

    def remove(self) -> None:
        self._require_root()
        if not self.home.exists() and not self._tmp_dirs():
            return
        with file_lock(self._lock_path(), waiting=f"waiting for another moshi-build creating {self.home} ...", echo=self.echo):
            if self.home.exists():
                try:
                    with file_lock(self.home / "session.lock"):
                        # Out of sight first (atomic), then deleted; a crash in between leaves
                        # a .tmp that the next ensure() or remove() deletes.
                        trash = self.cache_dir / f".{self.home.name}.{os.getpid()}-{time.time_ns()}.removed.tmp"
                        os.replace(self.home, trash)
                except BlockingIOError:
                    raise ToolchainError(
                        f"{self.home} is in use by another moshi-build session; remove it when that ends"
                    ) from None
            for tmp in self._tmp_dirs():
                mounts.safe_rmtree(tmp)
        self._info = None

    @contextlib.contextmanager
    def session(self, shared_paths: list[Path], aliases: Mapping[Path, str] | None = None) -> Iterator[DebianSession]:
        info = self.info()  # raises if not created
        self._require_root()
        with self._session_lock():
            with mounted(self.root, list(shared_paths), self.mounter, aliases=aliases):
                yield DebianSession(self.root, self, _hip_env(info), aliases)

    @contextlib.contextmanager
    def _session_lock(self):
        """Shared lock on home/session.lock for the session's lifetime.

        If no other session holds it (the exclusive lock is free), anything still
        mounted in the root was left by a killed session and is unmounted first.
        """
        with file_lock(self.home / "session.lock", acquire=False) as lock:
            if lock.try_acquire(exclusive=True):  # no other session runs: what is mounted is stale
                with mounts.signals_held():
                    left = mounts.unmount_all_under(self.root)
                if left:
                    self.echo("unmounted what an earlier, killed session left mounted: "
                              + ", ".join(map(str, left)))
            lock.acquire(exclusive=False)
            yield

    # -- creation ---------------------------------------------------------------
    def mmdebstrap_argv(self, target: Path) -> list[str]:
        """A bare apt root with the stack's suites; the stack's steps fill it afterwards."""
        spec = self.spec
        argv = ["mmdebstrap", "--mode=root", f"--variant={self.stack.variant}",
                f"--aptopt=APT::Default-Release \"{spec.base_suite}\"",
                '--aptopt=APT::Install-Recommends "false"']
        if not self.check_valid_until:
            # The registry serves stale Release files here; apt refuses them unless told not to check.
            argv.append('--aptopt=Acquire::Check-Valid-Until "false"')
        argv += [f"--setup-hook={spec.setup_hook()}", spec.base_suite, str(target)]
        return argv

    def _create(self) -> None:
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.home.name}.", suffix=".tmp", dir=self.cache_dir))
        log = tmp / "create.log"
        try:
            argv = self.mmdebstrap_argv(tmp / "root")
            suites = " + ".join(s.name for s in self.stack.suites) or "nothing else"
            self.echo(f"creating the ROCm {self.stack.name} build environment in {self.home} "
                      f"({self.spec.base_suite} + {suites}; about 2 minutes, 3-6 GB)")
            tmp.chmod(0o755)  # apt's download user must reach root/var/lib/apt/lists
            with open(log, "w") as logf:
                code = self._logged(argv, logf, lambda line: line.startswith("I: ") and "hook" not in line,
                                    "mmdebstrap: ")
                if code != 0:
                    logf.close()
                    self._creation_failed(log, code)
                self._fill(tmp / "root", logf)
            (tmp / "spec.json").write_text(json.dumps(self.spec.to_json(), indent=2) + "\n")
            info = self._probe(tmp / "root")
            info["created_seconds"] = round(time.monotonic() - start, 1)
            info["size_bytes"] = _tree_size(tmp / "root")
            self._validate(info)
            info["root"] = str(self.root)
            info = _write_info(tmp, info)
            os.replace(tmp, self.home)
            self._info = info
            self.echo(f"ROCm {self.stack.name} build environment ready in {info['created_seconds']:.0f} s: HIP "
                      f"{info.get('hip_version')}, clang {info.get('clang_version')}, glibc "
                      f"{info.get('glibc_version')}; rocBLAS kernels for "
                      f"{' '.join(info.get('rocblas_kernel_targets', []))}")
        except BaseException as e:
            kept = None
            if log.exists() and not isinstance(e, (KeyboardInterrupt, PinnedPackageError)):
                kept = self.cache_dir / f"{self.home.name}.failed.log"
                with contextlib.suppress(OSError):
                    shutil.copyfile(log, kept)
            with contextlib.suppress(Exception):
                mounts.unmount_all_under(tmp / "root")
            with contextlib.suppress(Exception):
                mounts.safe_rmtree(tmp)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise DiskFullError(f"no space left on the device holding {self.cache_dir} while creating "
                                    "the debian build environment; free some space and run again") from None
            raise

    def _logged(self, argv: list[str], logf, show: Callable[[str], bool] = lambda line: False,
                prefix: str = "") -> int:
        """run_logged() into the open creation log; echo the lines `show` picks."""
        def echo(line: str) -> None:
            if show(line):
                self.echo("  " + prefix + (line[3:] if line.startswith("I: ") else line).rstrip()[:100])
        return run_logged(argv, logf, on_line=echo, stop_timeout=60)

    def _fill(self, root: Path, logf) -> None:
        """Run the stack's steps in the new root: pins checked first, then installs and stand-ins."""
        session = DebianSession(root)
        env = {**session.base_env(), "DEBIAN_FRONTEND": "noninteractive"}
        log_path = Path(logf.name)

        def inside(argv: list[str], what: str, capture: bool = False) -> str:
            if capture:
                r = subprocess.run(session.wrap(argv, Path("/"), env), stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, errors="replace")
                logf.write("$ " + shlex.join(argv) + "\n" + r.stdout + r.stderr)
                logf.flush()
                code, out = r.returncode, r.stdout
            else:
                code, out = self._logged(session.wrap(argv, Path("/"), env), logf), ""
            if code != 0:
                logf.flush()
                kept = self.cache_dir / (self.home.name + ".failed.log")
                raise ToolchainError(failure(what, code, log_path, kept, context=f"in the new ROCm {self.stack.name} root"))
            return out

        with mounted(root, [], self.mounter):
            self.echo("  apt-get update (base and extra suites)")
            inside(["apt-get", "update"], "apt-get update")
            names = sorted({p.name for p in self.stack.pins})
            madison = inside(["apt-cache", "madison", *names], "apt-cache madison", capture=True)
            check_pins(self.stack, madison)
            for step in self.stack.steps:
                if isinstance(step, InstallStep):
                    self.echo(f"  installing {len(step.packages)} pinned packages: "
                              + " ".join(p.name for p in step.packages[:6]) + (" ..." if len(step.packages) > 6 else ""))
                    inside(["apt-get", "install", "-y", "--no-install-recommends",
                            *map(str, step.packages)], f"installing {step.why.splitlines()[0]}")
                else:
                    self._make_standin(root, step, inside)
            inside(["apt-get", "clean"], "apt-get clean")

    def _make_standin(self, root: Path, step: StandinStep, inside: Callable[..., str]) -> None:
        """Generate, package and install the stand-in library `step` describes."""
        work_inner = Path("/tmp/moshi-build-standin")
        work = root / work_inner.relative_to("/")
        if work.exists():
            shutil.rmtree(work)
        (work / "pkg" / "DEBIAN").mkdir(parents=True)
        work.chmod(0o777)  # apt's download user writes the .deb here
        pin = step.symbols_from
        inside(["sh", "-c", f'cd {work_inner} && apt-get download {shlex.quote(str(pin))} && '
                f'dpkg-deb -x {shlex.quote(pin.name)}_*.deb unpacked'], f"unpacking {pin}")
        consumers = sorted(work.glob(f"unpacked/usr/lib/*/{step.consumer}"))
        if not consumers:
            raise ToolchainError(f"{pin} has no usr/lib/*/{step.consumer}; check the stand-in of "
                                 f"{step.package} in builder/resources/stacks.toml")
        consumer_inner = work_inner / consumers[0].relative_to(work)
        symbols = undefined_symbols(inside(["nm", "-D", "--undefined-only", str(consumer_inner)],
                                           f"nm on {step.consumer}", capture=True), step.symbol_prefix)
        if not symbols:
            raise ToolchainError(f"{step.consumer} of {pin} imports no {step.symbol_prefix}* symbol: "
                                 f"the stand-in {step.package} is not needed; remove it from stacks.toml")
        multiarch = consumers[0].parent.name
        (work / "standin.c").write_text(standin_source(step, symbols))
        libdir = work / "pkg" / "usr" / "lib" / multiarch
        libdir.mkdir(parents=True)
        inside(["gcc", "-shared", "-fPIC", "-O2", "-s", f"-Wl,-soname,{step.soname}",
                "-o", str(work_inner / libdir.relative_to(work) / step.soname), str(work_inner / "standin.c")],
               f"compiling the stand-in {step.soname}")
        (work / "pkg" / "DEBIAN" / "control").write_text(standin_control(step, self.spec.architecture))
        doc = work / "pkg" / "usr" / "share" / "doc" / step.package
        doc.mkdir(parents=True)
        (doc / "copyright").write_text(standin_copyright(step.record(symbols)))
        record_dir = work / "pkg" / STANDIN_RECORD_DIR
        record_dir.mkdir(parents=True)
        (record_dir / f"{step.package}.json").write_text(json.dumps(step.record(symbols), indent=2) + "\n")
        # dpkg-deb wants DEBIAN/ at 0755..0775 and the files readable, whatever root's umask is.
        for path in (work / "pkg").rglob("*"):
            path.chmod(0o755 if path.is_dir() or path.name == step.soname else 0o644)
        (work / "pkg").chmod(0o755)
        deb = work_inner / f"{step.package}.deb"
        inside(["dpkg-deb", "--root-owner-group", "--build", str(work_inner / "pkg"), str(deb)],
               f"packaging the stand-in {step.package}")
        inside(["dpkg", "-i", str(deb)], f"installing the stand-in {step.package}")
        shutil.rmtree(work)
        self.echo(f"  stand-in {step.package} {step.version}: {step.soname} with {len(symbols)} "
                  f"{step.symbol_prefix}* functions returning {step.return_value}")

    def _creation_failed(self, log: Path, code: int) -> None:
        text = log.read_text(errors="replace")
        kept = self.cache_dir / f"{self.home.name}.failed.log"
        if "No space left on device" in text:
            raise DiskFullError(f"no space left on the device holding {self.cache_dir} while creating the "
                                f"debian build environment; free some space and run again (log: {kept})")
        if "is expired" in text or "is not valid yet" in text:
            raise ToolchainError(
                f"mmdebstrap failed: the package registry serves Release files apt considers expired; "
                f"create the environment without the Valid-Until check (check_valid_until=False) "
                f"(log: {kept})")
        raise ToolchainError(failure("mmdebstrap", code, log, kept, "the ROCm stacks are in builder/resources/stacks.toml",
                                     context="creating the debian build environment"))

    def _probe(self, root: Path) -> dict:
        session = DebianSession(root)
        env = session.base_env()

        def run(argv: list[str]) -> subprocess.CompletedProcess:
            return subprocess.run(session.wrap(argv, Path("/"), env), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=300)

        with mounted(root, [], self.mounter):
            info = probe(run, root)
            r = run(["dpkg-query", "-W", "-f", "${binary:Package}\\t${Version}\\n"])
        installed = {}
        for line in r.stdout.splitlines():
            name, _, version = line.partition("\t")
            if name and version:
                installed[name.split(":")[0]] = version
        standins = []
        for record in sorted((root / STANDIN_RECORD_DIR).glob("*.json")):
            standins.append(json.loads(record.read_text()))
        info.update(kind="debian", key=self.key, home=str(self.home), rocm_stack=self.stack.name,
                    rocm_stack_summary=self.stack.summary, base_suite=self.spec.base_suite,
                    extra_suites={s.name: s.priority for s in self.stack.suites},
                    hip_offload_flags=self.stack.hip_offload_flags, standins=standins,
                    installed_packages=installed)
        return info

    def _validate(self, info: dict) -> None:
        hip = info.get("hip_version")
        if not hip:
            raise ToolchainError(f"hipconfig does not run in the new root; see {info.get('home')}; "
                                 "check the ROCm stack's pins in builder/resources/stacks.toml")
        if Version(hip) < self.min_hip:
            raise ToolchainError(f"the new root has HIP {hip}, older than {self.min_hip} that ROCm stack "
                                 f"{self.stack.name} needs; check its pins in builder/resources/stacks.toml")
        if not info.get("compiler_gpu_targets"):
            raise ToolchainError(f"{info.get('clang')} in the new root lists no AMD GPU targets")
        # The probe read the root's kernel folder with rocblas.find_kernel_folder / kernel_targets_in.
        facts = rocblas.facts()
        if not info.get("rocblas_kernel_targets"):
            raise ToolchainError(f"the new root has no {facts.name} Tensile library folder "
                                 f"({facts.debian_package_prefix} installed?)")
        declared = set(self.stack.rocblas_targets)
        found = set(info["rocblas_kernel_targets"])
        if declared != found:
            raise ToolchainError(
                f"ROCm stack {self.stack.name} declares {facts.name} kernels for {' '.join(sorted(declared))} but "
                f"the new root's {facts.name} has them for {' '.join(sorted(found))}; fix rocblas_targets in "
                "builder/resources/stacks.toml")

    def _refresh_info_if_stale(self) -> None:
        info = self.info()
        if info.get("probe_version") == PROBE_VERSION:
            return
        self._require_root()
        with file_lock(self._lock_path(), waiting=f"waiting for {self._lock_path()} ...",
                    echo=self.echo), file_lock(self.home / "session.lock", waiting=f"waiting for sessions of {self.home} to end ...",
                                            echo=self.echo):
            with mounts.signals_held():
                mounts.unmount_all_under(self.root)
            fresh = self._probe(self.root)
            for k in ("created_seconds", "size_bytes"):
                if k in info:
                    fresh[k] = info[k]
            fresh["root"] = str(self.root)
            self._info = _write_info(self.home, fresh)

    # -- checks -----------------------------------------------------------------
    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise ToolchainError(
                "the debian build environment needs root (mmdebstrap, mount, chroot); run as root, "
                "or install ROCm >= 6.1 and use --env host"
            )

    def _check_free_space(self) -> None:
        st = os.statvfs(self.cache_dir)
        free_gib = st.f_bavail * st.f_frsize / 2**30
        if free_gib < self.min_free_gib:
            raise DiskFullError(
                f"{free_gib:.1f} GiB free at {self.cache_dir}; the debian build environment needs about "
                f"{self.min_free_gib:.0f} GiB: free some space or point --cache-dir elsewhere"
            )

    def _ensure_host_tools(self) -> None:
        for tool in ("chroot", "mount", "umount"):
            if not shutil.which(tool) and not Path("/usr/sbin", tool).exists() and not Path("/bin", tool).exists():
                raise ToolchainError(f"{tool} is missing on this machine; install util-linux / coreutils")
        if shutil.which("mmdebstrap"):
            return
        if not shutil.which("apt-get"):
            raise ToolchainError("mmdebstrap is missing and this is not a Debian-like host with apt-get; "
                                 "install mmdebstrap, or use --env host with ROCm >= 6.1")
        self.echo("installing mmdebstrap with apt-get ...")
        opts = [] if self.check_valid_until else ["-o", "Acquire::Check-Valid-Until=false"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", *opts, "update"], ["apt-get", *opts, "install", "-y", "mmdebstrap"]):
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise ToolchainError(
                    f"mmdebstrap is missing and `{' '.join(argv)}` failed (exit {r.returncode}): "
                    f"{(r.stderr or r.stdout).strip()[-300:]}; install the mmdebstrap package by hand"
                )
        if not shutil.which("mmdebstrap"):
            raise ToolchainError("apt-get installed mmdebstrap but it is not on PATH")


# Packages whose versions info() shows (all of them go to packages.json).
_SHOWN_PACKAGE_PREFIXES = ("hipcc", "libamdhip64", "libhipblas", "librocblas", "librocsolver", "libhsa-runtime",
                           "libamd-comgr", "rocm-", "clang-", "libllvm", "libc6", "gcc-1", "g++-1",
                           "libstdc++6", "cmake", "ninja-build", "python3")


def _write_info(home: Path, info: dict) -> dict:
    """Write info.json (and packages.json with every installed package) into `home`, atomically each."""
    info = dict(info)
    installed = info.pop("installed_packages", None)
    if installed is not None:
        blob = json.dumps(installed, indent=1, sort_keys=True) + "\n"
        info["packages_digest"] = hashlib.sha256(blob.encode()).hexdigest()
        info["packages"] = {p: v for p, v in sorted(installed.items())
                            if p.startswith(_SHOWN_PACKAGE_PREFIXES)}
        tmp = home / "packages.json.tmp"
        tmp.write_text(blob)
        os.replace(tmp, home / "packages.json")
    tmp = home / "info.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, home / "info.json")
    return info


def _tree_size(path: Path) -> int:
    """Bytes allocated below `path`, not crossing into other file systems."""
    total = 0
    dev = path.stat().st_dev
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_dev != dev:
                continue
            total += st.st_blocks * 512
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == dev]
    return total
