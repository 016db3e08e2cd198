"""Trust the artifact: check a built wheel without installing it.

One pass over the archive (reader.inspect_wheel) collects what every check
needs: the dynamic section, symbol versions and offload bundles of each ELF
member, and the paths of the build machine any member mentions. Then:

  runtime-info  _runtime.json is there and names this wheel and its gfx target
  elf-closure   every DT_NEEDED resolves inside the wheel through the file's own
                $ORIGIN RPATH, or is on the allow-list of the wheel's manylinux
                policy (auditwheel's policy data); the libraries the runtime
                opens with dlopen() sit where their opener finds them (the
                [[dlopen]] rules of runtime.toml as the wheel's _runtime.json
                recorded them; the current runtime.toml's for older wheels)
  rpath         RPATH/RUNPATH entries are $ORIGIN-relative and stay in the wheel
  gpu-code      the libraries verify.toml names carry code objects for the target
  kernels       the kernel folder holds the target's files and no other target's
  code-selection  the wheel's own comgr, asked what the HIP runtime asks, gives the
                target's code object (e_flags naming it) for every bundle of every
                fat binary and code-object file, and nothing for any other target
  standins      generated stand-in libraries (stacks.toml) are imported only by
                their consumer, and nothing imports the consumer's functions that
                reach them
  build-paths   no file mentions a directory of the build machine (see
                build_path_needles() for what counts)
  licenses      every component and system package the wheel names has its
                license file; every grafted library belongs to one of them
  sbom          the CycloneDX document of .dist-info/sboms/ names this wheel, is in RECORD,
                and lists a component for every ELF file (builder/check/sbom.py)
  manylinux     the platform tag is the one the highest GLIBC/GLIBCXX/...
                symbol versions (and the libraries left to the system) call for; with a
                glibc floor, the versions needed from the system allow the floor's tag
  glibc-floor   every file loads on the floor's glibc (builder/check/glibc_floor.py)

  archive       the wheel reads as pip installs it: no absolute or '..' member name, no
                symbolic link, no member of absurd size or compression ratio, and RECORD
                lists every member with its sha256 and size (reader.inspect_wheel)

Each check returns a CheckResult; verify_wheel() returns them all.

Three kinds of wheel (docs/WHEEL-PAIR.md):

  self-contained  <package>/_runtime.json names a gpu_target: every check above
  base            moshi_rocm/_runtime.json has "kind": "base": checked on its own;
                  its backends are the CPU variants only, and gpu-code, kernels and
                  code-selection do not apply (it carries no GPU code); elf-closure
                  also finds every SONAME it "provides" in its bin/
  target          <folder>/_target.json has "kind": "target": checked together with
                  the base wheel of its version (beside it, or given: base=...), or it
                  fails the base-wheel check and nothing else is checked. Its DT_NEEDED
                  resolve inside it or, through a RUNPATH entry naming the base's
                  moshi_rocm/bin, to a SONAME the base provides; code-selection asks
                  the base wheel's comgr about the target wheel's bundles; standins
                  looks at both wheels; the other checks look at the target wheel alone
"""

from __future__ import annotations

import dataclasses
import email.parser
import fnmatch
import json
import os
import posixpath
import re
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from elftools.elf.elffile import ELFFile
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.check import glibc_floor as floor_check
from builder.check import sbom as sbom_check
from builder.check.reader import WheelReport, built_name, inspect_wheel
from builder.package import rules
from builder.package import elfinfo
from builder.package import linkage
from builder.common import resources
from builder.errors import FatalError
from builder.rocm import gfx, rocblas
from builder.rocm.offload import BundleFormatError, FatbinSummary, fatbin_summary
from builder.sources.recipe import PROJECT_ROOT
from builder.package.rules import DlopenRule, RuntimeSpec
from builder.rocm.standins import behaviour_of
from builder.package.symver import ElfVersionError, SymbolVersions, read_versions

_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(?P<arch>.+)$")
_LEGACY = re.compile(r"^manylinux(?:1|2010|2014)_(?P<arch>.+)$")
# Bytes that end a path inside a binary or a text file.
_PATH_END = re.compile(rb"[\x00-\x20\"'<>`|;,()\[\]{}\x7f-\xff]")
_HITS_KEPT = 3          # paths remembered per member (the count is exact)
_LINE_ITEMS = 3         # problems spelled out on a check's line


# --------------------------------------------------------------------------- results

@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    summary: str                       # what passed, or the reason it failed
    problems: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.summary}"

    def to_json(self) -> dict:
        return {"check": self.name, "ok": self.ok, "summary": self.summary, "problems": list(self.problems)}


@dataclasses.dataclass
class VerifyReport:
    wheel: Path
    gpu_target: str | None
    checks: list[CheckResult]
    seconds: float
    kind: str = "wheel"                   # "wheel" (self-contained), "base" or "target"
    base: dict | None = None              # a target wheel's base: {"wheel": file name, "version": V}

    @property
    def label(self) -> str:
        """What the wheel is, for the line naming it."""
        if self.kind == "base":
            return "base wheel"
        if self.kind == "target":
            with_base = f"with {self.base['wheel']}" if self.base else "no base wheel"
            return f"{self.gpu_target or 'unknown target'}, {with_base}"
        return self.gpu_target or "unknown target"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    def lines(self) -> list[str]:
        return [c.line for c in self.checks]

    def to_json(self) -> dict:
        doc = {"wheel": str(self.wheel), "gpu_target": self.gpu_target, "ok": self.ok,
               "seconds": round(self.seconds, 2), "checks": [c.to_json() for c in self.checks]}
        if self.kind != "wheel":
            doc["kind"] = self.kind
        if self.kind == "target":
            doc["base"] = self.base
        return doc


def _result(name: str, problems: list[str], passed: str) -> CheckResult:
    """A check's result: `passed` when there is no problem, else the first few problems on one line."""
    if not problems:
        return CheckResult(name, True, passed)
    shown = "; ".join(problems[:_LINE_ITEMS])
    more = f"; and {len(problems) - _LINE_ITEMS} more" if len(problems) > _LINE_ITEMS else ""
    return CheckResult(name, False, shown + more, tuple(problems))


# --------------------------------------------------------------------------- settings

@dataclasses.dataclass(frozen=True)
class VerifySettings:
    device_code: tuple[str, ...]
    path_markers: tuple[str, ...]
    min_components: int
    backends: tuple[tuple[str, int, str], ...] = ()     # (pattern, min count, why)


def load_settings() -> VerifySettings:
    data = resources.load("verify")
    backends = tuple((b["pattern"], int(b.get("min", 1)), b.get("why", ""))
                     for b in data.get("backends", {}).get("required", ()))
    return VerifySettings(tuple(data["device_code"]["libraries"]), tuple(data["build_paths"]["markers"]),
                          int(data["build_paths"]["min_components"]), backends)


def build_path_needles(paths: Iterable[Path | str], settings: VerifySettings) -> tuple[list[str], list[str]]:
    """(strings to search for, directories left out as too generic).

    A path of the build machine is any string that starts with one of the
    build's own directories (given by the caller: cache root, source trees,
    step prefixes, build root, project checkout) or contains one of the
    markers of verify.toml (the default cache location of any user, so a wheel
    built elsewhere is caught too). Directories with fewer than min_components
    components (/, /tmp, /build) are not searched: Debian's own libraries name
    /build/... and /tmp/... legitimately.
    """
    needles, generic = [], []
    for p in paths:
        text = os.path.normpath(os.path.abspath(str(p)))
        if len([c for c in text.split("/") if c]) < settings.min_components:
            generic.append(text)
        else:
            needles.append(text)
    needles += list(settings.path_markers)
    # One needle that contains another one adds nothing.
    unique = sorted(set(needles), key=len)
    kept = [n for i, n in enumerate(unique) if not any(m in n for m in unique[:i])]
    return kept, sorted(set(generic))


def default_build_paths(cache_root: Path | None = None) -> list[Path]:
    """The build directories known on this machine: the cache root, the project checkout and,
    from CACHE/last-build.json, the step prefixes of the last build."""
    from builder.common.cache import default_cache_root

    root = Path(cache_root or default_cache_root())
    paths = [root, PROJECT_ROOT]
    record = root / "last-build.json"
    try:
        for step in json.loads(record.read_text()).get("steps", []):
            if step.get("prefix"):
                paths.append(Path(step["prefix"]))
    except (OSError, ValueError):
        pass
    return paths


def build_dirs_of(report, runtime_root: Path | None = None) -> list[Path]:
    """The directories a pipeline.BuildReport's build used: source trees, step prefixes, the cache
    root holding them (with the build trees under work/), the build root and the project checkout."""
    paths = [t.path for t in report.trees] + [r.prefix for r in report.results]
    paths += [r.prefix.parent.parent for r in report.results]      # CACHE/builds/<step>-<key>
    if runtime_root is not None and Path(runtime_root) != Path("/"):
        paths.append(Path(runtime_root))
    return list(dict.fromkeys(paths + [PROJECT_ROOT]))


# --------------------------------------------------------------------------- one pass over the wheel

class PathScanner:
    """Finds the needles in a stream of chunks per member (matches across chunk borders too)."""

    def __init__(self, needles: Sequence[str]) -> None:
        self.needles = [n.encode() for n in needles]
        self.overlap = max((len(n) for n in self.needles), default=1) - 1
        self.hits: dict[str, list[str]] = {}     # member -> first paths found
        self.counts: dict[str, int] = {}
        self._member: str | None = None
        self._tail = b""

    def __call__(self, member: str, chunk: bytes) -> None:
        if not self.needles:
            return
        if member != self._member:
            self._member, self._tail = member, b""
        data = self._tail + chunk
        start_new = len(self._tail)
        matches = []
        for needle in self.needles:
            pos = data.find(needle)
            while pos >= 0:
                if pos + len(needle) > start_new:      # not already seen in the previous chunk
                    matches.append((pos, len(needle)))
                pos = data.find(needle, pos + 1)
        covered = -1
        for pos, length in sorted(matches):
            if pos >= covered:                          # one path found by two needles counts once
                covered = self._record(member, data, pos, length)
        self._tail = data[-self.overlap:] if self.overlap else b""

    def _record(self, member: str, data: bytes, pos: int, length: int) -> int:
        """Count the path around data[pos:pos+length]; returns where it ends."""
        self.counts[member] = self.counts.get(member, 0) + 1
        m = _PATH_END.search(data, pos + length, pos + length + 300)
        end = m.start() if m else min(len(data), pos + length + 300)
        kept = self.hits.setdefault(member, [])
        if len(kept) < _HITS_KEPT:
            begin = pos
            while begin > 0 and pos - begin < 200 and not _PATH_END.match(data, begin - 1):
                begin -= 1
            text = data[begin:end].decode("utf-8", "replace")
            if text not in kept:
                kept.append(text)
        return end


@dataclasses.dataclass
class ElfDetails:
    versions: dict[str, set[str]]        # needed library -> symbol versions (GLIBC_2.34, ...)
    fatbin: FatbinSummary | None
    imports: frozenset[str] = frozenset()   # undefined dynamic symbols
    exports: frozenset[str] = frozenset()   # defined dynamic symbols
    fatbin_error: str | None = None         # .hip_fatbin could not be read
    symbols: SymbolVersions | None = None   # versioned imports and exports (the glibc-floor check)


@dataclasses.dataclass
class WheelContents:
    report: WheelReport
    details: dict[str, ElfDetails]
    scanner: PathScanner
    texts: dict[str, str]                 # small text members read whole (_runtime.json, METADATA)

    @property
    def files(self) -> dict[str, int]:
        return self.report.files

    @property
    def elf(self) -> dict[str, elfinfo.ElfInfo]:
        return self.report.elf


# _runtime.json, _target.json, METADATA, RECORD and the SBOM are read whole into memory: ours are
# at most a few MB (RECORD of a target wheel: 30 KB; models.json is not read here)
MAX_TEXT_BYTES = 16 << 20


def _is_text_wanted(member: str) -> bool:
    return member.endswith(("/_runtime.json", "/_target.json", ".dist-info/METADATA")) \
        or sbom_check.is_text_wanted(member)


def read_wheel(path: Path, needles: Sequence[str]) -> WheelContents:
    from auditwheel.elfutils import elf_find_versioned_symbols  # auditwheel's own reader

    details: dict[str, ElfDetails] = {}
    texts: dict[str, bytearray] = {}
    scanner = PathScanner(needles)

    def scan(member: str, chunk: bytes) -> None:
        scanner(member, chunk)
        if _is_text_wanted(member):
            kept = texts.setdefault(member, bytearray())
            if len(kept) <= MAX_TEXT_BYTES:   # a longer one is cut: it then fails to parse, in one line
                kept.extend(chunk[:MAX_TEXT_BYTES + 1 - len(kept)])

    def examine(member: str, file: Path, facts: elfinfo.ElfInfo) -> None:
        versions: dict[str, set[str]] = {}
        imports, exports = set(), set()
        with open(file, "rb") as f:
            elf = ELFFile(f)
            for library, version in elf_find_versioned_symbols(elf):
                versions.setdefault(library, set()).add(version)
            dynsym = elf.get_section_by_name(".dynsym")
            if dynsym is not None:
                for sym in dynsym.iter_symbols():
                    if not sym.name:
                        continue
                    (imports if sym["st_shndx"] == "SHN_UNDEF" else exports).add(sym.name)
        try:
            fatbin, error = fatbin_summary(file), None
        except BundleFormatError as e:
            fatbin, error = None, str(e)
        try:
            symbols = dataclasses.replace(read_versions(file), dynstr=b"")
        except ElfVersionError:
            symbols = None   # the glibc-floor check names the file
        details[member] = ElfDetails(versions, fatbin, frozenset(imports), frozenset(exports), error, symbols)

    report = inspect_wheel(path, scan=scan, examine=examine, strict=True)
    return WheelContents(report, details, scanner, {k: v.decode("utf-8", "replace") for k, v in texts.items()})


# --------------------------------------------------------------------------- names and paths

def libs_dir_of(contents: WheelContents) -> str | None:
    """auditwheel's folder of grafted libraries (<distribution>.libs) at the wheel's root."""
    return contents.report.libs_dir


def dlopen_rules(info: Mapping | None, spec: RuntimeSpec) -> tuple[tuple[DlopenRule, ...], str | None]:
    """(the dlopen rules to check the wheel against, a problem with its record or None).

    The wheel's own _runtime.json records the [[dlopen]] rules of runtime.toml it
    was made with; a wheel made before it did falls back to this runtime.toml's.
    """
    recorded = info.get("dlopen") if isinstance(info, Mapping) else None
    if recorded is None:
        return spec.dlopen, None
    try:
        if not isinstance(recorded, list):
            raise ValueError(f"not a list: {recorded!r}")
        return tuple(DlopenRule.from_json(r) for r in recorded), None
    except ValueError as e:
        return spec.dlopen, f"_runtime.json's dlopen is unreadable ({e}); runtime.toml's rules were used"


def origin_dirs(member: str, entries: Iterable[str]) -> tuple[list[str], list[str]]:
    """(wheel folders an ELF member's RPATH/RUNPATH names, entries that are not $ORIGIN-relative or leave the wheel)."""
    folder = posixpath.dirname(member)
    dirs, bad = [], []
    for entry in entries:
        m = re.match(r"^(\$ORIGIN|\$\{ORIGIN\})(/.*)?$", entry)
        if not m:
            bad.append(entry)
            continue
        d = posixpath.normpath(posixpath.join(folder, (m.group(2) or "").lstrip("/")))
        if d == ".." or d.startswith("../"):
            bad.append(entry)
            continue
        dirs.append("" if d == "." else d)
    return dirs, bad


def _found_in(dirs: Iterable[str], name: str, files: Mapping[str, int]) -> str | None:
    for d in dirs:
        candidate = f"{d}/{name}" if d else name
        if candidate in files:
            return candidate
    return None


def library_stem(name: str) -> str:
    """libelf-0.192.so -> libelf, libSDL2-2.0.so.0 -> libSDL2, libwayland-client.so.0.23.1 -> libwayland-client."""
    stem = name.split(".so", 1)[0]
    return re.sub(r"-[0-9][0-9.]*$", "", stem)


# --------------------------------------------------------------------------- policies

def _policies(arch: str):
    from auditwheel.architecture import Architecture
    from auditwheel.libc import Libc
    from auditwheel.policy import WheelPolicies

    return WheelPolicies(libc=Libc.GLIBC, arch=Architecture(arch))


def claimed_policy(platform_tags: Sequence[str]):
    """The auditwheel Policy of the most compatible manylinux tag the wheel claims, or None."""
    best = None
    for tag in platform_tags:
        m = _MANYLINUX.match(tag) or _LEGACY.match(tag)
        if not m:
            continue
        try:
            policy = _policies(m.group("arch")).get_policy_by_name(tag)
        except (LookupError, ValueError):
            continue
        if best is None or policy.priority > best.priority:
            best = policy
    return best


def _version_key(version: str) -> tuple:
    return tuple(int(x) if x.isascii() and x.isdigit() else 0 for x in re.split(r"[._]", version.partition("_")[2]))


def highest_versions(versions: Iterable[str]) -> dict[str, str]:
    """{"GLIBC": "GLIBC_2.34", "GLIBCXX": "GLIBCXX_3.4.32", ...}: the newest of each prefix."""
    best: dict[str, str] = {}
    for v in versions:
        prefix = v.partition("_")[0]
        if prefix not in best or _version_key(v) > _version_key(best[prefix]):
            best[prefix] = v
    return best


# --------------------------------------------------------------------------- the pair

def folder_of(distribution: str) -> str:
    """The normalized distribution name: the import folder and the wheel file's name prefix."""
    return canonicalize_name(distribution).replace("-", "_")


def _version(text) -> Version | str:
    try:
        return Version(str(text))
    except InvalidVersion:
        return str(text)


def _same_version(a, b) -> bool:
    return a is not None and b is not None and _version(a) == _version(b)


@dataclasses.dataclass
class BaseWheel:
    """The base wheel a target wheel is checked with."""
    path: Path
    contents: WheelContents
    info: dict
    info_member: str
    how: str                              # "beside it" or "given"

    @property
    def distribution(self) -> str:
        return str(self.info.get("distribution") or parse_wheel_filename(self.path.name)[0])

    @property
    def version(self) -> str:
        return str(self.info.get("version") or parse_wheel_filename(self.path.name)[1])

    @property
    def libs_dir(self) -> str | None:
        return self.contents.report.libs_dir

    @property
    def bin_dir(self) -> str:
        """Where the base keeps the libraries target wheels link: moshi_rocm/bin."""
        package = self.info.get("package") or self.info_member.split("/", 1)[0]
        return f"{package}/{self.info.get('bin_dir', 'bin')}"

    @property
    def provides(self) -> frozenset[str]:
        provides = self.info.get("provides")
        return frozenset(p for p in provides if isinstance(p, str)) if isinstance(provides, list) else frozenset()

    def summary(self) -> dict:
        return {"wheel": self.path.name, "version": self.version}


def wheel_kind(contents: WheelContents, package: str) -> tuple[str, dict | None, str | None]:
    """("target", its _target.json, member) for a target wheel, ("base", ...) for a base wheel,
    ("wheel", <package>/_runtime.json or None, member) for a self-contained one (docs/WHEEL-PAIR.md)."""
    for member in sorted(m for m in contents.texts if m.endswith("/_target.json") and m.count("/") == 1):
        try:
            data = json.loads(contents.texts[member])
        except ValueError:
            return "target", None, member
        if isinstance(data, dict) and data.get("kind") == "target":
            return "target", data, member
    info, member = _runtime_info(contents, package)
    if isinstance(info, dict) and info.get("kind") == "base":
        return "base", info, member
    return "wheel", info, member


def find_base_wheel(target_wheel: Path, base: str, version: str) -> Path | None:
    """The base wheel beside a target wheel: <normalized base>-<version>-*.whl in the same folder
    (of those, the one with the target wheel's platform tag first)."""
    found = []
    for candidate in sorted(Path(target_wheel).parent.glob("*.whl")):
        try:
            name, found_version = parse_wheel_filename(candidate.name)[:2]
        except InvalidWheelFilename:
            continue
        if name == canonicalize_name(base) and _same_version(found_version, version):
            found.append(candidate)
    own = set(parse_wheel_filename(Path(target_wheel).name)[3])
    found.sort(key=lambda c: not (set(parse_wheel_filename(c.name)[3]) & own))
    return found[0] if found else None


_READ: dict[tuple, WheelContents] = {}   # the last wheels read as a base (one base serves many targets)


def _read_key(path: Path, needles: Sequence[str]) -> tuple:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size, tuple(needles)


def _remember(path: Path, needles: Sequence[str], contents: WheelContents) -> None:
    key = _read_key(path, needles)
    _READ.pop(key, None)
    _READ[key] = contents
    while len(_READ) > 2:
        _READ.pop(next(iter(_READ)))


def _read_base(path: Path, needles: Sequence[str]) -> WheelContents:
    """The base wheel read once for all the target wheels verified with it (and with itself, when verified first)."""
    key = _read_key(path, needles)
    if key not in _READ:
        _remember(path, needles, read_wheel(path, needles))
    return _READ[key]


def pair_with_base(path: Path, info: dict | None, spec: RuntimeSpec, needles: Sequence[str],
                   base: Path | str | None) -> tuple[CheckResult, BaseWheel | None, dict | None]:
    """The base-wheel check of a target wheel: (result, the base wheel if it fits, what was looked at)."""
    name = path.name
    info = info or {}
    version = str(info.get("version") or parse_wheel_filename(name)[1])
    base_dist = str(info.get("base") or spec.package.replace("_", "-"))
    pin = f"{base_dist}=={version}"
    if base is None:
        found = find_base_wheel(path, base_dist, version)
        if found is None:
            return CheckResult("base-wheel", False, f"{name} is a target wheel: verify it with its base wheel {pin} "
                               f"(put {folder_of(base_dist)}-{version}-*.whl beside it or pass --base)"), None, None
        base, how = found, "beside it"
    else:
        base, how = Path(base), "given"
    looked_at = {"wheel": base.name, "version": None}
    try:
        base_name, base_file_version = parse_wheel_filename(base.name)[:2]
    except InvalidWheelFilename as e:
        return CheckResult("base-wheel", False, f"{base.name} is not a wheel file name ({e}); {name} needs {pin}"), \
            None, looked_at
    looked_at["version"] = str(base_file_version)
    contents = _read_base(base, needles)
    base_info, base_member = _runtime_info(contents, spec.package)
    if not isinstance(base_info, dict) or base_info.get("kind") != "base" or base_name != canonicalize_name(base_dist):
        return CheckResult("base-wheel", False, f"{base.name} is not the base wheel {base_dist} (no <package>/_runtime.json "
                           f"with \"kind\": \"base\" in a wheel of that name); {name} needs {pin}"), None, looked_at
    pair = BaseWheel(base, contents, base_info, base_member, how)
    looked_at = pair.summary()
    for other in dict.fromkeys([str(base_file_version), pair.version]):
        if not _same_version(other, version):
            return CheckResult("base-wheel", False, f"{base.name} is {base_dist} {other}, but {name} is version "
                               f"{version}: a target wheel goes with the base wheel of its own version ({pin})"), \
                None, looked_at
    return (CheckResult("base-wheel", True, f"{base.name} ({how}): {base_dist} {pair.version}, providing "
                        f"{_count(len(pair.provides), 'SONAME')} in {pair.bin_dir}/"), pair, looked_at)


# --------------------------------------------------------------------------- the checks

@dataclasses.dataclass
class Context:
    contents: WheelContents
    spec: RuntimeSpec
    settings: VerifySettings
    info: dict | None
    info_member: str | None
    gpu_target: str | None
    libs_dir: str | None
    policy: object | None                 # auditwheel Policy of the wheel's tag
    needles: list[str]
    generic: list[str]
    probe_root: object | None = None      # code_selection.ProbeRoot, or callable(needed glibc) making one
    kind: str = "wheel"                   # "wheel" (self-contained), "base" or "target"
    base: BaseWheel | None = None         # a target wheel's base wheel

    @property
    def package(self) -> str:
        """The wheel's folder: its import package (a target wheel: the folder of its _target.json)."""
        if self.kind == "target" and self.info_member:
            return self.info_member.split("/", 1)[0]
        return (self.info or {}).get("package", self.spec.package)


NO_GPU_CODE = "not applicable: a base wheel carries no GPU code"


def check_runtime_info(ctx: Context) -> CheckResult:
    if ctx.kind == "base":
        return _runtime_info_of_base(ctx)
    if ctx.kind == "target":
        return _runtime_info_of_target(ctx)
    problems = []
    name = ctx.contents.report.path.name
    if ctx.info is None:
        problems.append(f"no readable <package>/_runtime.json in {name}: not a moshi-build wheel, or a broken one")
        return _result("runtime-info", problems, "")
    target = ctx.gpu_target
    if not target or not gfx.is_gfx_name(target):
        problems.append(f"{ctx.info_member} names no gfx target (gpu_target = {target!r})")
    else:
        distribution = ctx.spec.distribution_for(target)
        wheel_name = parse_wheel_filename(name)[0]
        if ctx.info.get("distribution") != distribution:
            problems.append(f"{ctx.info_member} names {ctx.info.get('distribution')!r}, "
                            f"expected {distribution!r} for {target}")
        if wheel_name != parse_wheel_filename(f"{distribution.replace('-', '_')}-0-py3-none-any.whl")[0]:
            problems.append(f"the file is named for {wheel_name}, but its runtime says {distribution}")
    return _result("runtime-info", problems, f"{ctx.info.get('distribution')} {ctx.info.get('version')} "
                                             f"for {target}")


def _names_this_wheel(ctx: Context, distribution, problems: list[str]) -> None:
    """The runtime file names the wheel's distribution and version, and sits in its folder."""
    wheel_name, wheel_version = parse_wheel_filename(ctx.contents.report.path.name)[:2]
    if not isinstance(distribution, str) or canonicalize_name(distribution) != wheel_name:
        problems.append(f"{ctx.info_member} names {distribution!r}, but the file is named for {wheel_name}")
    elif ctx.info_member.split("/", 1)[0] != folder_of(distribution):
        problems.append(f"{ctx.info_member} is not in {folder_of(distribution)}/, the folder of {distribution}")
    if not _same_version(ctx.info.get("version"), wheel_version):
        problems.append(f"{ctx.info_member} says version {ctx.info.get('version')!r}, the file name {wheel_version}")


def _runtime_info_of_base(ctx: Context) -> CheckResult:
    info, member = ctx.info, ctx.info_member
    problems: list[str] = []
    _names_this_wheel(ctx, info.get("distribution"), problems)
    if info.get("gpu_target"):
        problems.append(f"{member} names a gfx target ({info['gpu_target']!r}): a base wheel serves every target")
    provides = info.get("provides")
    if not isinstance(provides, list) or not provides or not all(isinstance(p, str) and p for p in provides):
        problems.append(f"{member} lists no SONAMEs the target wheels may link (\"provides\": {provides!r})")
    pattern = info.get("target_distribution")
    if not isinstance(pattern, str) or "{gpu_target}" not in pattern:
        problems.append(f"{member} has no target_distribution naming {{gpu_target}} ({pattern!r})")
    count = len(provides) if isinstance(provides, list) else 0
    return _result("runtime-info", problems, f"{info.get('distribution')} {info.get('version')}: the base wheel, "
                                             f"providing {_count(count, 'SONAME')} to {pattern} wheels")


def _runtime_info_of_target(ctx: Context) -> CheckResult:
    info, member, base = ctx.info, ctx.info_member, ctx.base
    problems: list[str] = []
    target = ctx.gpu_target
    distribution = info.get("distribution")
    if not target or not gfx.is_gfx_name(target):
        problems.append(f"{member} names no gfx target (gpu_target = {target!r})")
    _names_this_wheel(ctx, distribution, problems)
    pattern = base.info.get("target_distribution")
    expected = pattern.replace("{gpu_target}", target) if isinstance(pattern, str) and target else None
    if expected and isinstance(distribution, str) and canonicalize_name(expected) != canonicalize_name(distribution):
        problems.append(f"{member} names {distribution!r}, but the base wheel names the {target} wheel {expected!r}")
    if canonicalize_name(str(info.get("base"))) != canonicalize_name(base.distribution):
        problems.append(f"{member} names the base {info.get('base')!r}, not {base.distribution}")
    pin = f"{base.distribution}=={info.get('version')}"
    if not _pins(info.get("requires"), base.distribution, info.get("version")):
        problems.append(f"{member} requires {info.get('requires')!r}, not {pin}")
    metadata = next((m for m in sorted(ctx.contents.texts) if m.endswith(".dist-info/METADATA")), None)
    if metadata is not None:
        message = email.parser.Parser().parsestr(ctx.contents.texts[metadata], headersonly=True)
        requires = message.get_all("Requires-Dist") or []
        if not any(_pins(r, base.distribution, info.get("version")) for r in requires):
            problems.append(f"METADATA does not require {pin} (Requires-Dist: {', '.join(requires) or 'none'})")
    folder = ctx.package
    own = (f"{folder}/", f"{folder}.libs/")
    strays = sorted(m for m in ctx.contents.files if not m.startswith(own) and ".dist-info/" not in m)
    if strays:
        problems.append(f"{_count(len(strays), 'file')} outside {folder}/ and {folder}.libs/ (they would overwrite the "
                        f"base wheel's or another target's), e.g. {strays[0]}")
    env = info.get("env") or {}
    for variable, relative in sorted(env.items() if isinstance(env, dict) else ()):
        where = posixpath.normpath(f"{folder}/{relative}")
        if where not in ctx.contents.files and not any(m.startswith(where + "/") for m in ctx.contents.files):
            problems.append(f"{member} sets {variable} to {relative}, but {where} is not in the wheel")
    return _result("runtime-info", problems, f"{distribution} {info.get('version')} for {target}, with "
                                             f"{base.distribution} {base.version}")


def _pins(requirement, distribution: str, version) -> bool:
    """`requirement` (a string: "moshi-rocm==1.0") asks for exactly `version` of `distribution`."""
    try:
        req = Requirement(str(requirement))
    except InvalidRequirement:
        return False
    specs = list(req.specifier)
    return (canonicalize_name(req.name) == canonicalize_name(distribution) and len(specs) == 1
            and specs[0].operator in ("==", "===") and _same_version(specs[0].version, version))


def _whitelist(ctx: Context) -> frozenset[str]:
    return ctx.policy.whitelist if ctx.policy is not None else linkage.manylinux_whitelist()


def check_closure(ctx: Context) -> CheckResult:
    if ctx.kind == "target":
        return _closure_of_target(ctx)
    files, elf = ctx.contents.files, ctx.contents.elf
    whitelist = _whitelist(ctx)
    policy_name = ctx.policy.name if ctx.policy is not None else "every manylinux policy"
    by_name: dict[str, list[str]] = {}
    for member in files:
        by_name.setdefault(posixpath.basename(member), []).append(member)
    problems, resolved = [], 0
    for member, facts in sorted(elf.items()):
        dirs, _ = origin_dirs(member, facts.runpath)
        for needed in facts.needed:
            if needed in whitelist or needed.startswith("ld-linux") or needed in ("ld64.so.1", "ld64.so.2"):
                continue
            if _found_in(dirs, needed, files):
                resolved += 1
                continue
            elsewhere = by_name.get(needed)
            if elsewhere:
                problems.append(f"{member} needs {needed}: it is at {elsewhere[0]}, which its RPATH "
                                f"({':'.join(facts.runpath) or 'none'}) does not search")
            else:
                problems.append(f"{member} needs {needed}: not in the wheel and not on the {policy_name} allow-list")
    # Libraries opened with dlopen(): invisible to DT_NEEDED.
    rules, unreadable = dlopen_rules(ctx.info, ctx.spec)
    if unreadable:
        problems.append(unreadable)
    rules = [r for r in rules if r.bundle]
    opened = []
    for rule in rules:
        before = len(problems)
        if rule.needed_by:
            openers = [m for m in elf if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), rule.needed_by)]
            if not openers:
                continue  # what would open it is not shipped (the builder applies the rule the same way)
            for opener in openers:
                dirs, _ = origin_dirs(opener, elf[opener].runpath)
                if not _found_in(dirs, rule.soname, files):
                    problems.append(f"{rule.soname} (opened with dlopen by {posixpath.basename(opener)}: "
                                    f"{rule.reason or 'runtime.toml'}) is not in its RPATH folders "
                                    f"({', '.join(d or '.' for d in dirs) or 'none'})")
        elif rule.soname not in by_name:
            problems.append(f"{rule.soname} (opened with dlopen: {rule.reason or 'runtime.toml'}) is not in the wheel")
        if len(problems) == before:
            opened.append(rule.soname)
    provided = ""
    if ctx.kind == "base":
        bin_dir = f"{ctx.package}/{ctx.info.get('bin_dir', ctx.spec.bin_dir)}"
        provides = [p for p in ctx.info.get("provides") or () if isinstance(p, str)]
        for soname in provides:
            if f"{bin_dir}/{soname}" not in files:
                problems.append(f"{ctx.info_member} provides {soname} to target wheels, but {bin_dir}/ has no such file")
        provided = f"; {bin_dir}/ holds the {_count(len(provides), 'SONAME')} it provides"
    return _result("elf-closure", problems,
                   f"{len(elf)} ELF files, {resolved} DT_NEEDED resolved inside the wheel, the rest on the "
                   f"{policy_name} allow-list; dlopen'd: {', '.join(opened) or 'none'}{provided}")


def _resolve_in_pair(dirs: Iterable[str], name: str, files: Mapping[str, int], base: BaseWheel) -> str | None:
    """Where the loader finds `name` for a member of a target wheel searching `dirs` in order:
    "target" (in the target wheel), "base" (in the base wheel's bin/), or None."""
    for d in dirs:
        if d == base.bin_dir:
            if f"{d}/{name}" in base.contents.files:
                return "base"
        elif _found_in([d], name, files):
            return "target"
    return None


def _closure_of_target(ctx: Context) -> CheckResult:
    """A target wheel's DT_NEEDED: inside it, or in the base wheel's bin/ and among the SONAMEs it provides."""
    files, elf, base = ctx.contents.files, ctx.contents.elf, ctx.base
    whitelist = _whitelist(ctx)
    policy_name = ctx.policy.name if ctx.policy is not None else "every manylinux policy"
    by_name: dict[str, list[str]] = {}
    for member in files:
        by_name.setdefault(posixpath.basename(member), []).append(member)
    base_by_name: dict[str, list[str]] = {}
    for member in sorted(base.contents.files):
        base_by_name.setdefault(posixpath.basename(member), []).append(member)
    provides, in_base = base.provides, f"the base wheel's {base.bin_dir}/"
    problems, resolved, shared = [], 0, {}
    for member, facts in sorted(elf.items()):
        dirs, _ = origin_dirs(member, facts.runpath)
        searched = ':'.join(facts.runpath) or 'none'
        for needed in facts.needed:
            if needed in whitelist or needed.startswith("ld-linux") or needed in ("ld64.so.1", "ld64.so.2"):
                continue
            where = _resolve_in_pair(dirs, needed, files, base)
            if where == "target":
                resolved += 1
            elif where == "base" and needed in provides:
                shared[needed] = shared.get(needed, 0) + 1
            elif where == "base" or needed not in provides and base_by_name.get(needed):
                at = f"{base.bin_dir}/{needed}" if where == "base" else base_by_name[needed][0]
                problems.append(f"{member} needs {needed}: the base wheel has it ({at}), but does not provide "
                                f"it (its _runtime.json provides {', '.join(sorted(provides)) or 'nothing'})")
            elif by_name.get(needed):
                problems.append(f"{member} needs {needed}: it is at {by_name[needed][0]}, which its RPATH "
                                f"({searched}) does not search")
            elif needed in provides and f"{base.bin_dir}/{needed}" in base.contents.files:
                problems.append(f"{member} needs {needed}: the base wheel provides it in {base.bin_dir}/, which its "
                                f"RPATH ({searched}) does not search")
            else:
                problems.append(f"{member} needs {needed}: not in the wheel, not provided by the base wheel "
                                f"{base.distribution} {base.version}, and not on the {policy_name} allow-list")
    # Libraries opened with dlopen() by a library of this wheel (the base's own openers are checked with the base).
    rules, unreadable = dlopen_rules(ctx.info if "dlopen" in ctx.info else base.info, ctx.spec)
    if unreadable:
        problems.append(unreadable)
    opened = []
    for rule in (r for r in rules if r.bundle and r.needed_by):
        before = len(problems)
        openers = [m for m in elf if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), rule.needed_by)]
        for opener in openers:
            dirs, _ = origin_dirs(opener, elf[opener].runpath)
            where = _resolve_in_pair(dirs, rule.soname, files, base)
            if where is None or where == "base" and rule.soname not in provides:
                problems.append(f"{rule.soname} (opened with dlopen by {posixpath.basename(opener)}: "
                                f"{rule.reason or 'runtime.toml'}) is not in its RPATH folders "
                                f"({', '.join(d or '.' for d in dirs) or 'none'})"
                                + (" among what the base wheel provides" if where == "base" else ""))
        if openers and len(problems) == before:
            opened.append(rule.soname)
    through = f" ({', '.join(sorted(shared))})" if shared else ""
    return _result("elf-closure", problems,
                   f"{len(elf)} ELF files, {resolved} DT_NEEDED resolved inside the wheel, {sum(shared.values())} "
                   f"in {in_base}{through}, the rest on the {policy_name} allow-list; "
                   f"dlopen'd: {', '.join(opened) or 'none'}")


def check_rpath(ctx: Context) -> CheckResult:
    if ctx.kind == "target":
        return _rpath_of_target(ctx)
    problems = []
    for member, facts in sorted(ctx.contents.elf.items()):
        _, bad = origin_dirs(member, facts.runpath)
        if bad:
            problems.append(f"{member}: RPATH entries not relative to $ORIGIN inside the wheel: {':'.join(bad)}")
    return _result("rpath", problems, f"every RPATH/RUNPATH of {len(ctx.contents.elf)} ELF files is $ORIGIN-relative")


def _rpath_of_target(ctx: Context) -> CheckResult:
    """$ORIGIN-relative entries naming the target wheel's own folders, or the base wheel's bin/."""
    folder, base_bin = ctx.package, ctx.base.bin_dir
    own = (folder, f"{folder}.libs")
    problems, to_base = [], 0
    for member, facts in sorted(ctx.contents.elf.items()):
        bad, elsewhere = [], []
        for entry in facts.runpath:
            dirs, wrong = origin_dirs(member, [entry])
            if wrong:
                bad.append(entry)
            elif dirs[0] == base_bin:
                to_base += 1
            elif dirs[0].split("/", 1)[0] not in own:
                elsewhere.append(f"{entry} ({dirs[0] or '.'})")
        if bad:
            problems.append(f"{member}: RPATH entries not relative to $ORIGIN inside the wheel: {':'.join(bad)}")
        if elsewhere:
            problems.append(f"{member}: RPATH entries outside {folder}/, {folder}.libs/ and the base wheel's "
                            f"{base_bin}/: {', '.join(elsewhere)}")
    return _result("rpath", problems, f"every RPATH/RUNPATH of {len(ctx.contents.elf)} ELF files is $ORIGIN-relative, "
                                      f"in the wheel or the base wheel's {base_bin}/ ({to_base} naming the base)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check_gpu_code(ctx: Context) -> CheckResult:
    if ctx.kind == "base":
        return CheckResult("gpu-code", True, NO_GPU_CODE)
    target = ctx.gpu_target
    if not target:
        return _result("gpu-code", ["the wheel's gfx target is unknown (see runtime-info)"], "")
    problems, found = [], []
    for pattern in ctx.settings.device_code:
        members = [m for m in sorted(ctx.contents.elf) if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), pattern)]
        if not members:
            problems.append(f"no {pattern} in the wheel")
            continue
        for member in members:
            fatbin = ctx.contents.details[member].fatbin
            name = posixpath.basename(member)
            if ctx.contents.details[member].fatbin_error:
                problems.append(f"{name}: {ctx.contents.details[member].fatbin_error}")
                continue
            if fatbin is None:
                problems.append(f"{name} has no .hip_fatbin section: no GPU code at all")
                continue
            targets = fatbin.targets
            if target not in targets:
                held = ", ".join(sorted(targets)) or "no target"
                problems.append(f"{name} carries code objects for {held}, none for {target}")
                continue
            others = len(targets) - 1
            found.append(f"{name} {_mb(targets[target])} for {target} in {_count(fatbin.bundles, 'bundle')}"
                         + (f" (+{_count(others, 'other target')})" if others else ""))
    return _result("gpu-code", problems, "; ".join(found))


def _is_gpu_backend(ctx: Context, pattern: str) -> bool:
    """A backend pattern of verify.toml that names a library carrying device code (libggml-hip.so)."""
    return any(fnmatch.fnmatchcase(pattern, d) or fnmatch.fnmatchcase(d, pattern) for d in ctx.settings.device_code)


def check_backends(ctx: Context) -> CheckResult:
    if ctx.kind == "target":
        return _backend_of_target(ctx)
    package = (ctx.info or {}).get("package", ctx.spec.package)
    bin_dir = f"{package}/{(ctx.info or {}).get('bin_dir', ctx.spec.bin_dir)}/"
    names = [m[len(bin_dir):] for m in ctx.contents.files if m.startswith(bin_dir) and "/" not in m[len(bin_dir):]]
    problems, found = [], []
    for pattern, least, why in ctx.settings.backends:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if ctx.kind == "base" and _is_gpu_backend(ctx, pattern):
            if hits:
                problems.append(f"{bin_dir} has {', '.join(sorted(hits))}: a base wheel carries no GPU backend "
                                "(it comes with the target wheels)")
            continue
        if len(hits) < least:
            problems.append(f"{bin_dir} has {len(hits)} {pattern} (at least {least} needed: {why}); "
                            "the tools would start without it")
        else:
            found.append(f"{len(hits)} {pattern}")
    gpu = " (the GPU backend comes with the target wheels)" if ctx.kind == "base" else ""
    return _result("backends", problems, f"{bin_dir}: " + ", ".join(found) + gpu)


def _backend_of_target(ctx: Context) -> CheckResult:
    """The backend _target.json names (the launcher points GGML_BACKEND_PATH at it) is in the wheel."""
    folder, named = ctx.package, ctx.info.get("backend")
    backends = [named] if isinstance(named, str) else named
    if not backends or not isinstance(backends, list) or not all(isinstance(b, str) and b for b in backends):
        return _result("backends", [f"{ctx.info_member} names no backend ({named!r}); the launcher would load "
                                    "no GPU backend"], "")
    problems, found = [], []
    for backend in backends:
        member = posixpath.normpath(f"{folder}/{backend}")
        if member not in ctx.contents.files:
            problems.append(f"{ctx.info_member} names the backend {backend}, but {member} is not in the wheel; "
                            "the launcher would load no GPU backend")
        elif member not in ctx.contents.elf:
            problems.append(f"{member}, the backend {ctx.info_member} names, is not an ELF library")
        else:
            found.append(member)
    return _result("backends", problems, f"{', '.join(found)}: the GPU backend the launcher loads (GGML_BACKEND_PATH)")


def check_kernels(ctx: Context) -> CheckResult:
    if ctx.kind == "base":
        return CheckResult("kernels", True, NO_GPU_CODE)
    target = ctx.gpu_target
    rules = [r for r in ctx.spec.data_dirs if r.select == "gpu_target"]
    problems, found = [], []
    package = ctx.package
    for rule in rules:
        readers = [m for m in ctx.contents.elf if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), rule.needed_by)]
        if not readers:
            continue
        folder = f"{package}/{rule.into}/"
        names = sorted(m[len(folder):] for m in ctx.contents.files if m.startswith(folder))
        if not target:
            problems.append(f"{rule.name}: the wheel's gfx target is unknown (see runtime-info)")
            continue
        if not names:
            problems.append(f"{rule.name}: {folder} is missing or empty, but {posixpath.basename(readers[0])} reads it")
            continue
        own = [n for n in names if rocblas.is_target_file(posixpath.basename(n), target)]
        foreign = [n for n in names if rocblas.foreign_targets(posixpath.basename(n), target)]
        if not own:
            problems.append(f"{rule.name}: {folder} holds no file for {target}")
        if foreign:
            others = sorted(rocblas.targets_in_names(posixpath.basename(n) for n in foreign) - {target})
            problems.append(f"{rule.name}: {folder} holds {_count(len(foreign), 'file')} of other targets "
                            f"({', '.join(others)}), e.g. {foreign[0]}")
        found.append(f"{folder}: {len(own)} {target} files, {len(names) - len(own) - len(foreign)} for any target")
    if not rules or not found and not problems:
        return CheckResult("kernels", True, "no kernel folder applies to this wheel")
    return _result("kernels", problems, "; ".join(found))


def check_build_paths(ctx: Context) -> CheckResult:
    scanner = ctx.contents.scanner
    problems = []
    for member in sorted(scanner.counts, key=lambda m: -scanner.counts[m]):
        n = scanner.counts[member]
        problems.append(f"{member} mentions {_count(n, 'build path')}, e.g. {scanner.hits[member][0]}")
    if problems:
        problems[0] = f"paths of the build machine in {_count(len(problems), 'file')}: {problems[0]}"
    left_out = f" ({', '.join(ctx.generic)} too generic, not searched)" if ctx.generic else ""
    return _result("build-paths", problems,
                   f"no file mentions {', '.join(ctx.needles)}{left_out}")


def check_licenses(ctx: Context) -> CheckResult:
    files = ctx.contents.files
    metadata_member = next((m for m in sorted(ctx.contents.texts) if m.endswith(".dist-info/METADATA")), None)
    problems = []
    if metadata_member is None:
        return _result("licenses", ["no .dist-info/METADATA in the wheel"], "")
    dist_info = metadata_member.rsplit("/", 1)[0]
    licenses = f"{dist_info}/licenses/"
    message = email.parser.Parser().parsestr(ctx.contents.texts[metadata_member], headersonly=True)
    if not message.get("License-Expression"):
        problems.append("METADATA has no License-Expression")
    declared = message.get_all("License-File") or []
    for f in declared:
        if licenses + f not in files:
            problems.append(f"METADATA lists License-File {f}, which is not in {licenses}")
    info = ctx.info or {}
    components = info.get("components", [])
    packages = info.get("system_packages", [])
    for c in components:
        folder = f"{licenses}LICENSES/{c['name']}/"
        if not any(m.startswith(folder) for m in files):
            problems.append(f"component {c['name']} {c.get('version', '')}: no license file under {folder}")
    for p in packages:
        member = f"{licenses}LICENSES/system/{p['package']}/copyright"
        if member not in files:
            problems.append(f"system package {p['package']}: {member} is missing")
    # Every grafted library must come from a package whose license ships.
    if ctx.libs_dir:
        stems = {library_stem(lib) for p in packages for lib in p.get("libraries", [])}
        for member in sorted(m for m in ctx.contents.elf if m.startswith(ctx.libs_dir + "/")):
            name = built_name(member, ctx.libs_dir)
            if library_stem(name) not in stems:
                problems.append(f"{posixpath.basename(member)} is bundled but no system package of "
                                f"{ctx.info_member or '_runtime.json'} lists it, so its license is unknown")
    return _result("licenses", problems,
                   f"{len(components)} components and {len(packages)} system packages, each with its license "
                   f"file; {len(declared)} License-File entries present")


def check_manylinux(ctx: Context) -> CheckResult:
    platforms = ctx.contents.report.platform_tags
    carried = {posixpath.basename(m) for m in ctx.contents.files}
    if ctx.base is not None:   # what the base wheel provides is not left to the system
        carried |= ctx.base.provides
    # Only what the system must provide counts: a library the wheel carries (libstdc++-moshi
    # under a glibc floor) brings its own versions.
    versions: dict[str, set[str]] = {}
    for d in ctx.contents.details.values():
        for library, vs in d.versions.items():
            if library not in carried:
                versions.setdefault(library, set()).update(vs)
    all_versions = {v for vs in versions.values() for v in vs}
    highest = highest_versions(all_versions)
    policy = ctx.policy
    if policy is None:
        return _result("manylinux", [f"no manylinux platform tag ({', '.join(platforms) or 'none'})"], "")
    shown = ", ".join(highest[p] for p in ("GLIBC", "GLIBCXX", "CXXABI", "GCC") if p in highest) or "none"
    problems = []
    for prefix, allowed in policy.symbol_versions.items():
        too_new = sorted((v for v in all_versions if v.partition("_")[0] == prefix
                          and v.partition("_")[2] not in allowed), key=_version_key)
        if too_new:
            users = sorted({lib for lib, vs in versions.items() if too_new[-1] in vs})
            problems.append(f"{policy.name} does not provide {', '.join(too_new)} (needed from {', '.join(users)})")
    # The tag auditwheel would give: the most compatible policy that has every symbol
    # version and lets the system provide every library the wheel does not carry.
    arch = policy.name.split("_", 3)[-1]
    policies = _policies(arch)
    external = {n for f in ctx.contents.elf.values() for n in f.needed
                if n not in carried and not n.startswith("ld-linux")}
    expected = None
    for p in sorted(policies, key=lambda p: -p.priority):
        if p.name.startswith("linux"):
            continue
        ok_versions = all(v.partition("_")[2] in p.symbol_versions[v.partition("_")[0]]
                          for v in all_versions if v.partition("_")[0] in p.symbol_versions)
        if ok_versions and external <= p.whitelist:
            expected = p
            break
    # A glibc floor names its tag itself (no lower one: only the floor is proven, by glibc-floor)
    floored = isinstance(ctx.info, dict) and isinstance(ctx.info.get("glibc_floor"), dict)
    if not floored and not problems and expected is not None and expected.name != policy.name:
        problems.append(f"tagged {policy.name}, but the newest symbol versions ({shown}) and the system "
                        f"libraries it needs fit {expected.name}")
    return _result("manylinux", problems, f"{policy.name} matches the newest symbol versions needed from the "
                                          f"system: {shown}")


def _members_named(ctx: Context, pattern: str) -> list[str]:
    return [m for m in sorted(ctx.contents.elf) if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), pattern)]


def _is_library(ctx: Context, member: str, soname: str) -> bool:
    """The member is the library `soname` names (its file may carry a longer version: libhipblas.so.3.2)."""
    return _is_library_in(ctx.libs_dir, member, soname)


def _is_library_in(libs_dir: str | None, member: str, soname: str) -> bool:
    name = built_name(member, libs_dir)
    return name == soname or name.startswith(soname + ".")


def check_code_selection(ctx: Context) -> CheckResult:
    """Ask the wheel's own comgr which code object the HIP runtime would load (code_selection.py)."""
    from builder.check import code_selection
    from builder.rocm.targets import elf_machs

    if ctx.kind == "base":
        return CheckResult("code-selection", True, NO_GPU_CODE)
    target = ctx.gpu_target
    if not target:
        return _result("code-selection", ["the wheel's gfx target is unknown (see runtime-info)"], "")
    fatbins = [m for m, d in ctx.contents.details.items() if d.fatbin is not None and d.fatbin.bundles]
    pair: dict = {}
    if ctx.kind == "target":
        # The bundles are the target wheel's; comgr (and the libLLVM it needs) is the base wheel's.
        base = ctx.base
        comgr = [m for m in sorted(base.contents.elf)
                 if fnmatch.fnmatchcase(built_name(m, base.libs_dir), "libamd_comgr.so*")]
        pair = {"comgr_wheel": base.path,
                "comgr_closure": library_closure(base.contents, comgr[0]) if comgr else None}
    else:
        comgr = _members_named(ctx, "libamd_comgr.so*")
    package = ctx.package
    rules = [r for r in ctx.spec.data_dirs if r.select == "gpu_target"]
    kernel_folder = f"{package}/{rules[0].into}/" if rules else None
    has_code_files = bool(kernel_folder) and any(
        m.startswith(kernel_folder) and rocblas.is_code_object_file(m) for m in ctx.contents.files)
    if not fatbins and not has_code_files:
        return CheckResult("code-selection", True, "no device code in the wheel")
    if ctx.kind == "target" and not comgr:
        return _result("code-selection", [f"the base wheel {ctx.base.path.name} has no libamd_comgr to ask"], "")
    platform_tags = ctx.contents.report.platform_tags + (ctx.base.contents.report.platform_tags if ctx.base else [])
    tags = [m for m in (_MANYLINUX.match(t) for t in platform_tags) if m]
    needed = max(((int(m.group(1)), int(m.group(2))) for m in tags), default=None)
    # a wheel with a glibc floor is probed on the floor's system (its suite is checked against environments.toml)
    floor = ctx.info.get("glibc_floor") if isinstance(ctx.info, dict) else None
    suite = floor.get("suite") if isinstance(floor, dict) and isinstance(floor.get("suite"), str) else None
    try:
        if callable(ctx.probe_root):
            probe_root = ctx.probe_root(needed, suite) if suite else ctx.probe_root(needed)
        else:
            probe_root = ctx.probe_root
    except FatalError as e:  # e.g. the clean root cannot be made here (not root, no network)
        return _result("code-selection", [f"no root filesystem to run the wheel's comgr in: {e}"], "")
    if probe_root is None:
        return _result("code-selection", ["no root filesystem to run the wheel's comgr in was given"], "")
    sel = code_selection.check_wheel(ctx.contents.report.path, target=target, machs=elf_machs(),
                                     comgr_member=comgr[0] if comgr else None, fatbin_members=fatbins,
                                     kernel_folder=kernel_folder, probe_root=probe_root, **pair)
    if sel.skipped:
        return CheckResult("code-selection", True, sel.skipped)
    others = len(elf_machs()) - 1
    whose = "the base wheel's comgr" if ctx.kind == "target" else "the wheel's comgr"
    where = "this machine" if Path(probe_root.root) == Path("/") else f"the clean root {Path(probe_root.root).parent.name}"
    return _result("code-selection", sel.problems,
                   f"{whose}, run in {where}, gives a {target} code object for each of {sel.bundles} bundles and "
                   f"code-object files ({sel.files} files) and nothing for {others} other targets")


def library_closure(contents: WheelContents, member: str) -> list[str]:
    """`member` and the ELF members it needs, through each one's $ORIGIN RPATH, transitively."""
    files, elf = contents.files, contents.elf
    seen, todo = [member], [member]
    while todo:
        current = todo.pop()
        dirs, _ = origin_dirs(current, elf[current].runpath)
        for needed in elf[current].needed:
            found = _found_in(dirs, needed, files)
            if found in elf and found not in seen:
                seen.append(found)
                todo.append(found)
    return sorted(seen)


def check_standins(ctx: Context) -> CheckResult:
    """Generated stand-ins (stacks.toml, runtime.toml): only their consumers import what they
    define, and no library imports a function of a consumer that would reach them. A target
    wheel is looked at with its base: a stand-in of either wheel is imported only by its
    consumer, in either wheel."""
    sides = [(ctx.contents, ctx.info or {}, posixpath.basename(ctx.info_member or "_runtime.json"), ctx.libs_dir,
              "the wheel")]
    if ctx.base is not None:
        sides.append((ctx.base.contents, ctx.base.info, "_runtime.json", ctx.base.libs_dir, "the base wheel"))
    # the glibc compatibility library is every file's: the glibc-floor check looks at it
    declared = [(s, side) for side in sides for s in side[1].get("standins") or []
                if isinstance(s, dict) and s.get("role") != "glibc-compat"]
    if not declared:
        return CheckResult("standins", True, "the wheel carries no generated stand-in"
                           + (", nor does its base wheel" if ctx.base is not None else ""))
    problems, found = [], []
    for s, (contents, _, record, libs_dir, which) in declared:
        soname, consumer = s.get("soname", "?"), s.get("consumer", "?")
        consumers = [c.strip() for c in consumer.split(",")]
        symbols = set(s.get("symbols", []))
        members = [m for m in sorted(contents.elf) if _is_library_in(libs_dir, m, soname)]
        if not members:
            problems.append(f"{record} lists the stand-in {soname} but {which} does not carry it")
            continue
        exports = contents.details[members[0]].exports
        missing = sorted(symbols - exports)
        if missing:
            problems.append(f"the stand-in {soname} does not define {_count(len(missing), 'declared symbol')}, "
                            f"e.g. {missing[0]}")
        solver = re.compile(s.get("solver_functions") or r"(?!)")
        for other, _, _, other_libs, _ in sides:
            for member, details in sorted(other.details.items()):
                if other is contents and member == members[0] \
                        or any(_is_library_in(other_libs, member, c) for c in consumers):
                    continue
                reached = sorted(details.imports & symbols)
                if reached:
                    problems.append(f"{posixpath.basename(member)} imports {reached[0]}, which only the stand-in "
                                    f"{soname} defines (each of its functions {behaviour_of(s)})")
                calls = sorted(n for n in details.imports if solver.search(n))
                if calls:
                    problems.append(f"{posixpath.basename(member)} imports {calls[0]} of {consumer}, which reaches "
                                    f"the stand-in {soname}")
        found.append(f"{soname} stands in for {s.get('replaces')} ({len(symbols)} functions); only {consumer} "
                     "imports them" + (", and nothing imports its solver functions" if s.get("solver_functions") else ""))
    either = " (in either wheel of the pair)" if ctx.base is not None else ""
    return _result("standins", problems, "; ".join(found) + either)


def check_archive(ctx: Context) -> CheckResult:
    """The wheel as pip installs it (reader.inspect_wheel): no member named outside the install
    tree, no symbolic link, no member of absurd size or compression ratio, and RECORD matches
    every member (listed, sha256, size)."""
    return _archive_result(ctx.contents)


def _archive_result(contents: WheelContents) -> CheckResult:
    report = contents.report
    return _result("archive", list(report.problems),
                   f"{_count(len(report.files), 'member')} install inside the tree and match RECORD")


CHECKS = (check_archive, check_runtime_info, check_closure, check_rpath, check_backends, check_gpu_code, check_kernels,
          check_code_selection, check_standins, check_build_paths, check_licenses, sbom_check.check_sbom,
          check_manylinux, floor_check.check_glibc_floor)



# --------------------------------------------------------------------------- the whole job

def _runtime_info(contents: WheelContents, package: str) -> tuple[dict | None, str | None]:
    candidates = [f"{package}/_runtime.json"] + sorted(m for m in contents.texts if m.endswith("/_runtime.json"))
    for member in candidates:
        if member in contents.texts:
            try:
                return json.loads(contents.texts[member]), member
            except ValueError:
                return None, member
    return None, None


def verify_wheel(path: Path, *, build_paths: Iterable[Path | str] = (),
                 spec: RuntimeSpec | None = None, settings: VerifySettings | None = None,
                 probe_root=None, base: Path | str | None = None) -> VerifyReport:
    """Run every check on the wheel at `path`.

    The wheel says what it should hold (its _runtime.json: target, dlopen rules, stand-ins,
    system packages); `spec` (runtime.toml) fills in what an older wheel's record lacks.
    build_paths: directories of the build machine no file may mention (build_path_needles())
    probe_root:  where the wheel's comgr can run (code_selection.ProbeRoot, or a callable that
                 makes one from the (major, minor) glibc the wheel's tag needs, when a check needs it)
    base:        the base wheel a target wheel is checked with (default: the one of its version
                 beside it); ignored for a base or self-contained wheel
    """
    start = time.monotonic()
    path = Path(path)
    spec = spec or rules.load_runtime_spec()
    settings = settings or load_settings()
    needles, generic = build_path_needles(build_paths, settings)
    contents = read_wheel(path, needles)
    kind, info, info_member = wheel_kind(contents, spec.package)
    target = info.get("gpu_target") if isinstance(info, dict) else None
    pair, paired = None, []
    archive = _archive_result(contents)
    if kind == "target":
        if info is None:
            failed = _result("runtime-info", [f"{info_member} in {path.name} is not readable JSON: a target wheel "
                                              "without its record cannot be checked"], "")
            return VerifyReport(path, None, [archive] * (not archive.ok) + [failed], time.monotonic() - start, kind, None)
        result, pair, looked_at = pair_with_base(path, info, spec, needles, base)
        if pair is None:
            return VerifyReport(path, target, [archive] * (not archive.ok) + [result], time.monotonic() - start, kind, looked_at)
        paired = [result]
    elif kind == "base":
        _remember(path, needles, contents)      # the target wheels verified next read it as their base
    ctx = Context(contents=contents, spec=spec, settings=settings, info=info,
                  info_member=info_member, gpu_target=target, libs_dir=libs_dir_of(contents),
                  policy=claimed_policy(contents.report.platform_tags), needles=needles, generic=generic,
                  probe_root=probe_root, kind=kind, base=pair)
    checks = [archive] + paired + [check(ctx) for check in CHECKS if check is not check_archive]
    return VerifyReport(path, target, checks, time.monotonic() - start, kind, pair.summary() if pair else None)
