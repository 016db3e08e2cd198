"""The libraries a payload loads from a root filesystem, found the way the dynamic linker and
`auditwheel repair --ldpaths` find them (auditwheel's own lddtree)."""

from __future__ import annotations
import dataclasses
import fnmatch
import functools
import glob
import logging
import os
import sys
from pathlib import Path
from typing import Iterable
from builder.errors import ToolchainError
from builder.package.rules import DataDirRule
from builder.common.elfinfo import read_elf


log = logging.getLogger(__name__)


# Directories the dynamic linker always searches, whatever ld.so.conf says.
TRUSTED_DIRS = ("lib", "lib64", "usr/lib", "usr/lib64")


def resolve_in_root(root: Path, path: str) -> Path:
    """Resolve `path` (absolute inside `root`) following symlinks as if `root` were /.

    Absolute symlink targets restart at root, so nothing resolves outside it.
    """
    root = Path(root)
    if root == Path("/"):
        return Path(os.path.realpath(path))
    parts = [p for p in Path(path).parts if p not in ("/", "")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"too many levels of symbolic links resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in Path(target).parts if p not in ("/", "")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def in_root_path(root: Path, path: Path) -> str:
    """The absolute path a file of `root` has inside it: /usr/lib/..."""
    root = Path(root)
    return "/" + str(Path(path).relative_to(root)) if root != Path("/") else str(path)


def library_dirs(root: Path) -> list[Path]:
    """The directories the dynamic linker of `root` searches (ld.so.conf, then the trusted ones)."""
    from auditwheel.lddtree import parse_ld_so_conf  # auditwheel's own parser

    root = Path(root)
    prefix = str(root).rstrip("/") + "/"
    dirs = [Path(p) for p in parse_ld_so_conf(str(root / "etc/ld.so.conf"), root=prefix)]
    dirs += [root / d for d in TRUSTED_DIRS]
    seen: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            seen.setdefault(os.path.normpath(d), Path(os.path.normpath(d)))
    return list(seen.values())


def _elf_kind(path: Path) -> bytes | None:
    """ELF class, byte order and e_machine: what a library must share with its loader."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    return head[4:6] + head[18:20] if head[:4] == b"\x7fELF" and len(head) == 20 else None


@functools.cache
def host_elf_kind() -> bytes | None:
    return _elf_kind(Path(os.path.realpath(sys.executable)))


def find_library(soname: str, dirs: Iterable[Path]) -> Path | None:
    """The first `soname` in `dirs` built for this machine's architecture (auditwheel's reading
    of ld.so.conf puts /usr/lib32, with the i386 copies, before the x86_64 folder)."""
    want = host_elf_kind()
    for d in dirs:
        candidate = Path(d) / soname
        if candidate.exists() and (want is None or _elf_kind(candidate) in (want, None)):
            return candidate
    return None


@functools.cache
def manylinux_whitelist() -> frozenset[str]:
    """Libraries no manylinux policy lets a wheel carry (the system provides them)."""
    from auditwheel.architecture import Architecture
    from auditwheel.libc import Libc
    from auditwheel.policy import WheelPolicies

    policies = [p for p in WheelPolicies(libc=Libc.GLIBC, arch=Architecture.detect()) if p.name != "linux"
                and not p.name.startswith("linux_")]
    common = frozenset.intersection(*(p.whitelist for p in policies)) if policies else frozenset()
    # ld.so is never grafted either.
    return common


@dataclasses.dataclass
class ExternalLibrary:
    soname: str
    path: Path            # where it was found (inside the root)
    realpath: Path        # the file itself
    needed_by: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Closure:
    libraries: dict[str, ExternalLibrary]    # SONAME -> library auditwheel will graft
    unresolved: dict[str, set[str]]          # SONAME -> files that need it
    outside_root: dict[str, Path]            # SONAME -> a path that escaped the root

    def matching(self, pattern: str) -> list[ExternalLibrary]:
        return [lib for s, lib in sorted(self.libraries.items()) if fnmatch.fnmatchcase(s, pattern)]

    @property
    def directories(self) -> list[Path]:
        return list(dict.fromkeys(lib.path.parent for lib in self.libraries.values()))


def external_closure(files: Iterable[Path], root: Path, dirs: list[Path], inside: Path,
                     exclude: Iterable[str] = ()) -> Closure:
    """Every library outside `inside` that the ELF `files` load, found in `root`.

    Resolves the way `auditwheel repair --ldpaths DIRS` will: auditwheel's
    lddtree with the host as root ($ORIGIN entries point into the wheel, which
    is not inside the runtime root). Absolute RUNPATH entries of the root's
    libraries (e.g. a private subfolder) would then point at the host, so they
    are added to the search path inside the root, and the closure computed again
    until it no longer grows. Whitelisted system libraries are left out, those
    auditwheel leaves out under every manylinux policy.
    """
    from auditwheel.lddtree import ldd

    files = [Path(f) for f in files]
    root = Path(root)
    inside = Path(inside).resolve()
    whitelist = manylinux_whitelist()
    search = [Path(d) for d in dirs]
    while True:
        closure = Closure({}, {}, {})
        ldpaths = {"conf": [str(d) for d in search], "env": [], "interp": []}
        for f in files:
            # exclude: SONAMEs another wheel provides (auditwheel repair --exclude): neither
            # they nor what only they load are part of this closure.
            tree = ldd(f, ldpaths={k: list(v) for k, v in ldpaths.items()}, exclude=frozenset(exclude))
            for soname, lib in tree.libraries.items():
                if soname in whitelist or soname.startswith("ld-linux"):
                    continue
                if lib.realpath is None or lib.path is None:
                    closure.unresolved.setdefault(soname, set()).add(f.name)
                    continue
                real = Path(lib.realpath).resolve()
                if real.is_relative_to(inside):
                    continue
                if not real.is_relative_to(root.resolve()):
                    closure.outside_root[soname] = real
                    continue
                entry = closure.libraries.setdefault(soname, ExternalLibrary(soname, Path(lib.path), real))
                entry.needed_by.add(f.name)
        extra = []
        if root != Path("/"):
            for lib in closure.libraries.values():
                info = read_elf(lib.realpath)
                for entry in info.runpath if info else ():
                    if entry.startswith("/"):
                        d = resolve_in_root(root, entry)
                        if d.is_dir() and d not in search and d not in extra:
                            extra.append(d)
        if not extra:
            return closure
        search += extra


def find_data_dir(rule: DataDirRule, library: Path) -> Path:
    """The folder a data rule names, relative to the library that reads it."""
    base = Path(library).parent
    for pattern in rule.search:
        matches = sorted({os.path.normpath(m) for m in glob.glob(str(base / pattern)) if os.path.isdir(m)})
        matches = [Path(m) for m in matches]
        if len(matches) > 1:
            raise ToolchainError(
                f"{rule.name}: {pattern!r} matches {len(matches)} folders next to {library}: "
                f"{', '.join(str(m) for m in matches)}; the runtime root holds more than one version"
            )
        if matches:
            return matches[0]
    raise ToolchainError(
        f"{rule.name}: none of {', '.join(rule.search)} exists next to {library}; "
        "the runtime root lacks the data package for this library"
    )
