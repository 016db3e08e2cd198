"""What a wheel must carry at run time, read from data and from the ELF files.

builder/resources/runtime.toml says which files of the step prefixes form the
payload and what the dynamic linker cannot tell (dlopen'd libraries, data
folders). This module answers the questions around it, with no knowledge of
any particular component:

  load_runtime_spec()     the rules, validated
  read_elf()              kind, SONAME, DT_NEEDED and RUNPATH of a file
  library_dirs()          the dynamic linker's search path of a root filesystem
  external_closure()      every library the payload loads from that root
  PackageDatabase         which system package owns a library, its version and
                          copyright file (dpkg's database inside the root)
  select_target_files()   the files of a data folder that belong to a gfx target

The closure is computed with auditwheel's own lddtree, so it names the same
libraries `auditwheel repair` will graft.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import glob
import logging
import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Iterable

import jsonschema
from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile

from builder.errors import RecipeError, ToolchainError
from builder.standins import WheelStandinRule

log = logging.getLogger(__name__)

ELF_MAGIC = b"\x7fELF"
# Directories the dynamic linker always searches, whatever ld.so.conf says.
TRUSTED_DIRS = ("lib", "lib64", "usr/lib", "usr/lib64")
_GFX_TOKEN = re.compile(r"gfx[0-9a-f]+")


# --------------------------------------------------------------------------- spec

@dataclasses.dataclass(frozen=True)
class DlopenRule:
    soname: str
    needed_by: str | None = None   # fnmatch pattern of the SONAME that opens it
    bundle: bool = True
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class DataDirRule:
    name: str
    needed_by: str
    search: tuple[str, ...]
    into: str
    select: str | None = None      # "gpu_target" or None (everything)
    env: str | None = None


@dataclasses.dataclass(frozen=True)
class RuntimeSpec:
    distribution: str
    package: str
    summary: str
    keywords: tuple[str, ...]
    version_format: str
    bin_dir: str
    lib_sdir: str
    strip: bool
    libraries: tuple[str, ...]
    data: tuple[str, ...]
    device_flags: tuple[str, ...]
    device_aliases: tuple[tuple[str, str], ...]
    dlopen: tuple[DlopenRule, ...]
    data_dirs: tuple[DataDirRule, ...]
    debian_licenses: tuple[tuple[str, str], ...]
    path: Path | None = None
    trim_device_code: bool = False
    standins: tuple[WheelStandinRule, ...] = ()

    def distribution_for(self, gpu_target: str) -> str:
        return self.distribution.format(gpu_target=gpu_target, package=self.package)

    def with_dlopen(self, sonames: Iterable[str]) -> "RuntimeSpec":
        """Add dlopen'd libraries named elsewhere (recipes' [runtime] dlopen).

        A name that already has a rule keeps it (the rule says who opens it);
        a new name gets a rule without needed_by: always bundled.
        """
        known = {r.soname for r in self.dlopen}
        extra = tuple(DlopenRule(s, reason="listed by a recipe") for s in dict.fromkeys(sonames) if s not in known)
        return dataclasses.replace(self, dlopen=self.dlopen + extra) if extra else self

    def license_for_package(self, package: str) -> str | None:
        for pattern, expression in self.debian_licenses:
            if fnmatch.fnmatchcase(package, pattern):
                return expression
        return None


_STR = {"type": "string", "minLength": 1}
_STRS = {"type": "array", "items": _STR}
_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "wheel", "payload", "launcher"],
    "properties": {
        "schema_version": {"const": 1},
        "wheel": {
            "type": "object", "additionalProperties": False,
            "required": ["distribution", "package", "summary", "version_format", "bin_dir"],
            "properties": {
                "distribution": _STR, "package": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"},
                "summary": _STR, "keywords": _STRS, "version_format": _STR,
                "bin_dir": _STR, "lib_sdir": {"type": "string", "pattern": "^\\.[A-Za-z0-9_.-]+$"},
                "strip": {"type": "boolean"}, "trim_device_code": {"type": "boolean"},
            },
        },
        "payload": {
            "type": "object", "additionalProperties": False,
            "properties": {"libraries": _STRS, "data": _STRS},
        },
        "launcher": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "device_flags": _STRS,
                "device_aliases": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["from", "to"],
                    "properties": {"from": _STR, "to": _STR}}},
            },
        },
        "dlopen": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["soname"],
            "properties": {"soname": _STR, "needed_by": _STR, "bundle": {"type": "boolean"}, "reason": {"type": "string"}},
        }},
        "data_dir": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "needed_by", "search", "into"],
            "properties": {"name": _STR, "needed_by": _STR, "search": _STRS, "into": _STR,
                           "select": {"enum": ["gpu_target"]}, "env": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"}},
        }},
        "standin": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["soname", "needed_by", "symbol_prefix", "replaces", "why"],
            "properties": {"soname": _STR, "needed_by": _STR, "symbol_prefix": _STR, "replaces": _STR,
                           "why": _STR, "license": _STR},
        }},
        "debian_licenses": {"type": "object", "additionalProperties": _STR},
    },
}


def parse_runtime_spec(data: dict, where: str) -> RuntimeSpec:
    errors = sorted(jsonschema.Draft202012Validator(_SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        loc = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise RecipeError(f"{where}: {loc}: {e.message}")
    w, p, l = data["wheel"], data["payload"], data["launcher"]
    spec = RuntimeSpec(
        distribution=w["distribution"],
        package=w["package"],
        summary=w["summary"],
        keywords=tuple(w.get("keywords", ())),
        version_format=w["version_format"],
        bin_dir=w["bin_dir"],
        lib_sdir=w.get("lib_sdir", ".libs"),
        strip=w.get("strip", True),
        trim_device_code=w.get("trim_device_code", False),
        libraries=tuple(p.get("libraries", ())),
        data=tuple(p.get("data", ())),
        device_flags=tuple(l.get("device_flags", ())),
        device_aliases=tuple((a["from"], a["to"]) for a in l.get("device_aliases", ())),
        dlopen=tuple(DlopenRule(d["soname"], d.get("needed_by"), d.get("bundle", True), d.get("reason", ""))
                     for d in data.get("dlopen", ())),
        data_dirs=tuple(DataDirRule(d["name"], d["needed_by"], tuple(d["search"]), d["into"],
                                    d.get("select"), d.get("env")) for d in data.get("data_dir", ())),
        debian_licenses=tuple(data.get("debian_licenses", {}).items()),
        path=Path(where),
        standins=tuple(WheelStandinRule(**s) for s in data.get("standin", ())),
    )
    for field in ("{release}", "{build_number}"):
        if field not in spec.version_format:
            raise RecipeError(f"{where}: wheel.version_format must contain {field}")
    if "{gpu_target}" not in spec.distribution:
        raise RecipeError(f"{where}: wheel.distribution must contain {{gpu_target}}: one distribution per target")
    return spec


def load_runtime_spec(path: Path | None = None) -> RuntimeSpec:
    try:
        if path is None:
            text = resources.files("builder.resources").joinpath("runtime.toml").read_text()
            where = "builder/resources/runtime.toml"
        else:
            text, where = Path(path).read_text(), str(path)
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise RecipeError(f"{path}: runtime rules not found") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path or 'runtime.toml'}: not valid TOML: {e}") from None
    return parse_runtime_spec(data, where)


# --------------------------------------------------------------------------- ELF

@dataclasses.dataclass(frozen=True)
class ElfInfo:
    path: Path
    kind: str                      # "executable" (has an interpreter), "library" or "other"
    soname: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]       # DT_RUNPATH, else DT_RPATH
    debug: bool = False            # has .debug_* / .zdebug_* sections


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo | None:
    """Dynamic-section facts of an ELF file; None for anything else."""
    if not path.is_file() or not is_elf(path):
        return None
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            interp = any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
            soname, needed, rpath, runpath = None, [], (), ()
            for seg in elf.iter_segments():
                if isinstance(seg, DynamicSegment):
                    for tag in seg.iter_tags():
                        t = tag.entry.d_tag
                        if t == "DT_SONAME":
                            soname = tag.soname
                        elif t == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif t == "DT_RPATH":
                            rpath = tuple(x for x in tag.rpath.split(":") if x)
                        elif t == "DT_RUNPATH":
                            runpath = tuple(x for x in tag.runpath.split(":") if x)
                    break
            e_type = elf["e_type"]
            debug = any(sec.name.startswith((".debug_", ".zdebug_")) for sec in elf.iter_sections())
    except (ELFError, OSError, ValueError) as e:
        log.debug("not a readable ELF file: %s (%s)", path, e)
        return None
    if interp:
        kind = "executable"
    elif e_type == "ET_DYN":
        kind = "library"
    else:
        kind = "other"
    return ElfInfo(path, kind, soname, tuple(needed), runpath or rpath, debug)


# --------------------------------------------------------------------------- roots

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


def find_library(soname: str, dirs: Iterable[Path]) -> Path | None:
    for d in dirs:
        candidate = Path(d) / soname
        if candidate.exists():
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


def external_closure(files: Iterable[Path], root: Path, dirs: list[Path], inside: Path) -> Closure:
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
            tree = ldd(f, ldpaths={k: list(v) for k, v in ldpaths.items()})
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


# --------------------------------------------------------------------------- packages

class PackageDatabase:
    """dpkg's view of a root filesystem: owner, version and copyright of files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info = self.root / "var/lib/dpkg/info"

    @classmethod
    def for_root(cls, root: Path) -> "PackageDatabase | None":
        db = cls(root)
        return db if db.info.is_dir() else None

    @functools.cached_property
    def _owners(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        for lst in self.info.glob("*.list"):
            package = lst.stem.split(":", 1)[0]
            try:
                for line in lst.read_text(errors="replace").splitlines():
                    if line and line != "/.":
                        owners.setdefault(line, package)
            except OSError:
                continue
        return owners

    @functools.cached_property
    def _versions(self) -> dict[str, str]:
        versions: dict[str, str] = {}
        status = self.root / "var/lib/dpkg/status"
        if not status.is_file():
            return versions
        for para in status.read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", para, flags=re.M))
            if "Package" in fields and "Version" in fields and "installed" in fields.get("Status", ""):
                versions.setdefault(fields["Package"], fields["Version"])
        return versions

    def owner(self, *paths: Path) -> str | None:
        """Package owning any of the files (host paths inside the root)."""
        candidates: list[str] = []
        for p in paths:
            inner = in_root_path(self.root, Path(p))
            candidates.append(inner)
            # merged /usr: dpkg may list /lib/... for a file reached as /usr/lib/... and back
            if inner.startswith("/usr/lib/"):
                candidates.append(inner[len("/usr"):])
            elif inner.startswith("/lib/"):
                candidates.append("/usr" + inner)
        for c in candidates:
            if c in self._owners:
                return self._owners[c]
        return None

    def version(self, package: str) -> str | None:
        return self._versions.get(package)

    def copyright(self, package: str) -> Path | None:
        path = resolve_in_root(self.root, f"/usr/share/doc/{package}/copyright")
        return path if path.is_file() else None


# --------------------------------------------------------------------------- data folders

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


def gfx_tokens(name: str) -> list[str]:
    return _GFX_TOKEN.findall(name)


def select_target_files(names: Iterable[str], gpu_target: str) -> list[str]:
    """Names that mention no gfx target, or only `gpu_target` (xnack variants included)."""
    return sorted(n for n in names if all(t == gpu_target for t in gfx_tokens(n)))


def targets_in_names(names: Iterable[str]) -> set[str]:
    return {t for n in names for t in gfx_tokens(n)}
