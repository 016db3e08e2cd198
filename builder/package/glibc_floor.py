"""The glibc floor: wheels built in a new root that load on an old glibc (runtime.toml [glibc_floor]).

Files built against glibc 2.41 ask libc.so.6 & co. for versions up to GLIBC_2.38. The
floor's glibc (2.31) has most of those names at its baseline version GLIBC_2.2.5 (they
got a new version when they moved into libc.so.6 in 2.34), some at another old version,
and a few not at all. So, for every ELF file of a wheel:

  1. each version need above the floor is pointed, in place, at GLIBC_2.2.5 (symver.py);
     ld.so then checks a version libc has, and binds each name by version across the scope;
  2. what the floor's glibc has at no version GLIBC_2.2.5 is defined at GLIBC_2.2.5 by the
     compatibility library, generated from what the files actually import: a forwarder
     where the floor has the name at another old version, else a function written in
     resources/glibc-compat.toml; a need neither covers fails the build;
  3. the files that had such needs link the compatibility library (DT_NEEDED), which links
     libpthread, libdl, librt and libm, where the floor keeps part of those names;
  4. a program's __libc_start_main import is renamed to the compatibility library's entry,
     which runs the program's constructors on any glibc;
  5. libstdc++ of the root ships in the base wheel under a name of its own (libstdc++.so.6
     of the system may be older; a process never holds both under one name).

No glibc has a name the library defines at GLIBC_2.2.5 (checked against the floor's
table), so its place in the search order changes nothing; its functions call the running
glibc's own version when there is one (see glibc-compat.toml).

The floor's symbol table (resources/glibc-floor-<version>.json) is taken from the floor
root's own libraries by floor_table_from_root(); `moshi-build glibc-floor table` writes it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from builder.common import resources
from builder.errors import BuildStepError, ConfigurationError
from builder.package import symver
from builder.common.elfinfo import read_elf
from builder.package.floor_spec import FloorSpec, version_key


# --------------------------------------------------------------------------- the floor's table

def floor_table_from_root(root: Path, spec: FloorSpec) -> dict:
    """Every symbol and version that the glibc libraries (and libgcc_s) of `root` define."""
    from builder.package import linkage

    dirs = linkage.library_dirs(Path(root))
    table: dict = {"glibc": spec.version, "libraries": {}}
    for soname in (*spec.libraries, spec.gcc_runtime):
        found = linkage.find_library(soname, dirs)
        if found is None:
            raise BuildStepError(f"{soname} is not in {root}'s library directories")
        real = linkage.resolve_in_root(Path(root), linkage.in_root_path(Path(root), found))
        v = symver.read_versions(real)
        table["libraries"][soname] = {
            "file": real.name, "sha256": hashlib.sha256(real.read_bytes()).hexdigest(),
            "versions": sorted(v.defined_versions),
            "symbols": {name: sorted(vs) for name, vs in sorted(v.exports.items())}}
    return table


@dataclasses.dataclass(frozen=True)
class FloorTable:
    version: str
    versions: Mapping[str, frozenset[str]]              # library -> versions it defines
    symbols: Mapping[str, Mapping[str, frozenset[str]]]  # library -> name -> versions
    source: Mapping = dataclasses.field(default_factory=dict)  # the suite and libc6 package it came from

    def exported(self, name: str, version: str) -> str | None:
        """The floor library that defines name@version, if any."""
        return next((lib for lib, names in self.symbols.items() if version in names.get(name, ())), None)

    def old_versions(self, name: str, libraries: Iterable[str]) -> list[str]:
        """The versions (oldest first) at which the floor's `libraries` define `name`."""
        found = {v for lib in libraries for v in self.symbols.get(lib, {}).get(name, ()) if version_key(v)}
        return sorted(found, key=version_key)

    @classmethod
    def from_json(cls, data: Mapping) -> "FloorTable":
        if not isinstance(data, Mapping) or not isinstance(data.get("libraries"), Mapping):
            raise ConfigurationError("the glibc floor table has no 'libraries'")
        return cls(str(data.get("glibc")),
                   {lib: frozenset(d.get("versions", ())) for lib, d in data["libraries"].items()},
                   {lib: {n: frozenset(vs) for n, vs in d.get("symbols", {}).items()}
                    for lib, d in data["libraries"].items()},
                   dict(data.get("source") or {}))


TABLE_NAME = "glibc-floor-{version}.json"     # in builder/resources


def table_resource(spec: FloorSpec) -> str:
    return TABLE_NAME.format(version=spec.version)


def table_of_suite(spec: FloorSpec, cache_envs: Path, echo: Callable[[str], None] = print) -> dict:
    """The floor's table from the clean root of its Debian suite (made if missing), with the
    suite and the libc6 package it came from."""
    from builder.envs.clean import CleanRoot

    clean = CleanRoot(cache_envs, suite=spec.suite, echo=echo)
    clean.ensure()
    table = floor_table_from_root(clean.root, spec)
    done = clean.run(["dpkg-query", "-W", "-f=${Version}", "libc6"])
    glibc = clean.info().get("glibc_version")
    if glibc != spec.version:
        raise ConfigurationError(f"the {spec.suite} root has glibc {glibc}, not the floor's {spec.version}: "
                                 "fix [glibc_floor] suite in runtime.toml")
    table["source"] = {"suite": spec.suite, "libc6": done.stdout.strip() or "unknown"}
    return table


def table_differences(shipped: Mapping, fresh: Mapping) -> list[str]:
    """What differs in versions and symbols (not in file hashes or package versions)."""
    out = []
    for lib in sorted(set(shipped.get("libraries", {})) | set(fresh.get("libraries", {}))):
        a, b = shipped.get("libraries", {}).get(lib, {}), fresh.get("libraries", {}).get(lib, {})
        for key in ("versions", "symbols"):
            if a.get(key) != b.get(key):
                out.append(f"{lib}: its {key} differ")
    return out


@functools.cache
def load_table(version: str) -> FloorTable:
    try:
        text = resources.packaged_text(TABLE_NAME.format(version=version))
    except FileNotFoundError:
        raise ConfigurationError(f"no symbol table for the glibc floor {version} "
                                 f"(builder/resources/glibc-floor-{version}.json); make it with "
                                 "`moshi-build glibc-floor table`") from None
    return FloorTable.from_json(json.loads(text))


# --------------------------------------------------------------------------- what files need

@dataclasses.dataclass(frozen=True)
class Catalogue:
    prelude: str
    functions: Mapping[str, Mapping]    # name -> entry of resources/glibc-compat.toml

    @property
    def start_main(self) -> tuple[str, str] | None:
        """(the program import it replaces, the compatibility library's entry)."""
        for name, entry in self.functions.items():
            if entry.get("replaces_import"):
                return entry["replaces_import"], name
        return None


@functools.cache
def load_catalogue() -> Catalogue:
    data = resources.load("glibc-compat")
    return Catalogue(data["prelude"], {f["name"]: f for f in data["function"]})


def floor_needs(files: Iterable[Path], spec: FloorSpec) -> dict[tuple[str, str], set[str]]:
    """(symbol, version) above the floor that the files import from glibc -> the files' names."""
    needs: dict[tuple[str, str], set[str]] = {}
    for path in files:
        try:
            versions = symver.read_versions(path)
        except symver.ElfVersionError as e:
            raise BuildStepError(str(e)) from None
        for (name, version), _ in versions.imports_from(spec.libraries).items():
            if spec.above(version):
                needs.setdefault((name, version), set()).add(path.name)
    return needs


@dataclasses.dataclass
class CompatPlan:
    """How each name needed above the floor is met."""
    in_floor: dict[str, str]              # name -> floor library that has it at the baseline
    forwards: dict[str, str]              # name -> older floor version it forwards to
    written: dict[str, str]               # name -> the version it stands for (glibc-compat.toml)
    needed_from: dict[str, list[str]]     # name -> "file (GLIBC_x)" that needs it

    @property
    def defines(self) -> list[str]:
        return sorted({*self.forwards, *self.written})

    def counts(self) -> dict[str, int]:
        """How many names the library defines, per version of the new glibc they stand for."""
        out: dict[str, int] = {}
        for name in self.defines:
            needs = self.needed_from.get(name) or []
            v = needs[0].rsplit("(", 1)[-1].rstrip(")") if needs else self.written.get(name, "")
            out[v] = out.get(v, 0) + 1      # a name another one requires counts at that one's version
        return dict(sorted(out.items(), key=lambda kv: version_key(kv[0]) or ()))


def plan_compat(needs: Mapping[tuple[str, str], set[str]], spec: FloorSpec, table: FloorTable,
                catalogue: Catalogue, also: Iterable[str] = ()) -> CompatPlan:
    """Decide for every needed name; raises naming the first name nothing can provide."""
    plan = CompatPlan({}, {}, {}, {})
    start = catalogue.start_main
    missing = []
    wanted: dict[str, str] = {}
    for (name, version), files in sorted(needs.items()):
        wanted.setdefault(name, version)
        plan.needed_from.setdefault(name, []).extend(f"{f} ({version})" for f in sorted(files))
    for name in also:
        wanted.setdefault(name, "")
    for name, version in sorted(wanted.items()):
        if start and name == start[0]:
            plan.written[start[1]] = version
            plan.needed_from[start[1]] = plan.needed_from.get(name, [])
            continue
        lib = table.exported(name, spec.baseline)
        if lib is not None:
            plan.in_floor[name] = lib
            continue
        old = [v for v in table.old_versions(name, spec.libraries) if version_key(v) <= spec.key]
        if old:
            plan.forwards[name] = old[-1]
        elif name in catalogue.functions:
            plan.written[name] = version
            for dep in catalogue.functions[name].get("requires", ()):
                plan.written.setdefault(dep, version)
        else:
            missing.append(f"{name}@{version or '?'} (needed by {', '.join(plan.needed_from.get(name, ['[glibc_floor] also']))})")
    if missing:
        raise BuildStepError(
            f"the glibc {spec.version} floor cannot provide {len(missing)} name(s): {missing[0]}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; write it in builder/resources/glibc-compat.toml or raise [glibc_floor] version in runtime.toml")
    clash = [n for n in plan.defines if table.exported(n, spec.baseline)]
    if clash:
        raise BuildStepError(f"the compatibility library would define {clash[0]}@{spec.baseline}, which the "
                             "floor's glibc has: its own reference would bind to itself")
    return plan


def compat_source(plan: CompatPlan, spec: FloorSpec, catalogue: Catalogue) -> tuple[str, str]:
    """(C source, linker version script) of the compatibility library."""
    parts = [f"/* Generated by moshi-build: glibc {spec.version} compatibility, {len(plan.defines)} names "
             f"at {spec.baseline}. */", catalogue.prelude]
    for name, old in sorted(plan.forwards.items()):
        parts.append(f'__asm__(".symver moshi_old_{name}, {name}@{old}\\n"\n'
                     f'        ".globl {name}\\n.type {name}, @function\\n{name}:\\n"\n'
                     f'        "    jmp moshi_old_{name}@PLT\\n");')
    for name in sorted(plan.written, key=lambda n: (bool(catalogue.functions[n].get("requires")), n)):
        parts.append(catalogue.functions[name]["code"].strip("\n"))
    script = f"{spec.baseline} {{\n  global:\n" + "".join(f"    {n};\n" for n in plan.defines) + "  local: *;\n};\n"
    return "\n\n".join(parts) + "\n", script


def compile_argv(cc: str, source: Path, script: Path, output: Path, spec: FloorSpec) -> list[str]:
    # No stack protector or fortify: the library calls nothing of glibc but what it names itself.
    return [cc, "-shared", "-fPIC", "-O2", "-s", "-fno-stack-protector", "-U_FORTIFY_SOURCE",
            "-Wno-builtin-declaration-mismatch", f"-Wl,-soname,{spec.compat_soname}",
            f"-Wl,--version-script,{script}", "-o", str(output), str(source), "-Wl,--no-as-needed",
            *(f"-l:{lib}" for lib in spec.libraries if lib != "libc.so.6")]


CompileCompat = Callable[[list[str], Path], None]   # (argv, folder the files are in) -> None


def make_compat(plan: CompatPlan, spec: FloorSpec, into: Path, compile_in: CompileCompat,
                catalogue: Catalogue | None = None, table: FloorTable | None = None) -> tuple[Path, dict]:
    """Generate and compile the compatibility library into `into`; returns it and its record."""
    catalogue = catalogue or load_catalogue()
    table = table or load_table(spec.version)
    into.mkdir(parents=True, exist_ok=True)
    source, script = compat_source(plan, spec, catalogue)
    (into / "glibc-compat.c").write_text(source)
    (into / "glibc-compat.map").write_text(script)
    output = into / spec.compat_soname
    compile_in(compile_argv("gcc", into / "glibc-compat.c", into / "glibc-compat.map", output, spec), into)
    problems = compat_problems(output, plan.defines, spec, table)
    if problems:
        raise BuildStepError(f"the generated compatibility library {spec.compat_soname}: {problems[0]}")
    differs = {n: catalogue.functions[n].get("differs", "") for n in sorted(plan.written)}
    record = {
        "package": "moshi-glibc-compat", "version": f"{spec.version}+moshibuild1", "soname": spec.compat_soname,
        "role": "glibc-compat", "made": "wheel", "license": "MIT",
        "replaces": "glibc",
        "names_phrase": f"glibc names (functions and one variable, listed in _runtime.json's glibc_floor) at {spec.baseline}",
        "consumer": "every file of the wheels with a glibc need above the floor",
        "behaviour": ("calls the running glibc's own function when it has one, else the floor's "
                      "(an older version of it, or code written in moshi-build's glibc-compat.toml)"),
        "why": (f"The wheels are built against glibc 2.41 and load on glibc {spec.version} and newer "
                "(runtime.toml [glibc_floor], docs/GLIBC-FLOOR.md): this library defines, at the version "
                f"their needs are pointed at, the names glibc {spec.version} lacks there."),
        "symbols": plan.defines, "forwards": dict(sorted(plan.forwards.items())),
        "written": sorted(plan.written), "differs": differs, "counts": plan.counts(),
        "floor": spec.to_json(),
    }
    return output, record


def compat_problems(path: Path, defines: Sequence[str], spec: FloorSpec, table: FloorTable) -> list[str]:
    return compat_problems_of(symver.read_versions(path), defines, spec, table)


def compat_problems_of(v: symver.SymbolVersions, defines: Iterable[str], spec: FloorSpec,
                       table: FloorTable) -> list[str]:
    """The compatibility library needs nothing above the floor, nothing the floor's glibc lacks,
    and defines each of `defines` at the baseline."""
    problems = [f"needs {n}@{need.version} from {need.file}, above the floor"
                for n, need in sorted(v.imports.items()) if need is not None and spec.above(need.version)]
    for (name, version), lib in sorted(v.imports_from(spec.libraries).items()):
        if version_key(version) and not spec.above(version) and table.exported(name, version) is None:
            problems.append(f"needs {name}@{version}, which the floor's glibc does not export")
    for name in defines:
        if spec.baseline not in v.exports.get(name, ()):
            problems.append(f"does not define {name}@{spec.baseline}")
    return problems


# --------------------------------------------------------------------------- the rewrite

@dataclasses.dataclass
class FileChange:
    path: Path
    rewritten: list[str]          # versions pointed at the baseline
    renamed_needed: list[str]     # private libraries now needed under their wheel name
    links_compat: bool
    entry_renamed: bool


def lower_file(path: Path, spec: FloorSpec, patchelf: str, run: Callable[[list[str]], None],
               catalogue: Catalogue | None = None, runpath: str | None = None) -> FileChange:
    """Apply the floor to one ELF file in place (the wheel's own copy). Every change patchelf
    makes goes into one call (each call may move .dynstr to the file's end: libLLVM's is
    megabytes), then the version needs are rewritten in place. runpath: set it in the same call."""
    catalogue = catalogue or load_catalogue()
    facts = read_elf(path)
    change = FileChange(path, [], [], False, False)
    if facts is None:
        return change
    ops: list[str] = []
    for old, new in spec.renames.items():
        if old in facts.needed:
            ops += ["--replace-needed", old, new]
            change.renamed_needed.append(new)
    versions = symver.read_versions(path)
    above = [n for n in versions.needs if n.file in spec.libraries and spec.above(n.version)]
    mapping = path.parent / f".{path.name}.renames"
    start = catalogue.start_main
    if above and facts.kind == "executable" and start and start[0] in versions.imports:
        need = versions.imports[start[0]]
        if need is not None and spec.above(need.version):
            mapping.write_text(f"{start[0]} {start[1]}\n")
            ops += ["--rename-dynamic-symbols", str(mapping)]
            change.entry_renamed = True
    if above and spec.compat_soname not in facts.needed and facts.soname != spec.compat_soname:
        ops += ["--add-needed", spec.compat_soname]
        change.links_compat = True
    if runpath is not None and tuple(runpath.split(":")) != facts.runpath:
        ops += ["--set-rpath", runpath]
    try:
        if ops:
            run([patchelf, *ops, str(path)])
    finally:
        mapping.unlink(missing_ok=True)
    if above:
        versions = symver.read_versions(path)   # patchelf may have moved the sections
        for need in versions.needs:
            if need.file in spec.libraries and spec.above(need.version):
                symver.point_need_at(path, need, spec.baseline, versions)
                change.rewritten.append(need.version)
    return change


def floor_problems(name: str, v: symver.SymbolVersions, spec: FloorSpec, table: FloorTable,
                   compat: Mapping[str, set[str]], private_versions: set[str]) -> list[str]:
    """Why the file `name` would not load on the floor (empty: it would): each glibc need must be
    exported by the floor's glibc or defined by the compatibility library at that version, each
    need of a private library met by the bundled copy, each GCC need by the floor's libgcc_s."""
    problems = []
    for need in v.needs:
        if need.file in spec.libraries and version_key(need.version) \
                and need.version not in table.versions.get(need.file, ()):
            problems.append(f"{name} needs version {need.version} of {need.file}, which the floor's does not define")
        elif need.file == spec.gcc_runtime and need.version not in table.versions.get(spec.gcc_runtime, ()):
            problems.append(f"{name} needs {need.version} of {need.file}; the floor's {spec.gcc_runtime} lacks it")
        elif need.file in spec.renames.values() and need.version not in private_versions:
            problems.append(f"{name} needs {need.version} of {need.file}, which the bundled copy does not define")
        elif need.file in spec.renames:
            problems.append(f"{name} needs {need.file} of the system: it must need {spec.renames[need.file]}")
    for (symbol, version), lib in sorted(v.imports_from(spec.libraries).items()):
        if not version_key(version) or table.exported(symbol, version) or version in compat.get(symbol, ()):
            continue
        problems.append(f"{name} imports {symbol}@{version} (from {lib}): neither the floor's glibc nor "
                        f"{spec.compat_soname} defines it")
    return problems


def needs_at_floor(path: Path, spec: FloorSpec, table: FloorTable, compat: Mapping[str, set[str]],
                   private_versions: set[str]) -> list[str]:
    return floor_problems(path.name, symver.read_versions(path), spec, table, compat, private_versions)
