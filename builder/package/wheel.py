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
import contextlib
import dataclasses
import json
import zipfile
import logging
import os
import posixpath
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence
from builder.package import rules
from builder.package import sbom
from builder.rocm import gfx
from builder.rocm import standins as standins_mod
from builder.common.process import check_logged
from builder.common.files import sha256_file
from builder.errors import BuildStepError, ConfigurationError, TargetError
from builder.package.rules import RuntimeSpec
from builder.package.timestamps import source_date_epoch
from builder.package.project import Component, TEMPLATE_DIR, provenance_paragraph, upstream_urls, _known_gpus, entry_points, license_expression, normalized_name, package_scripts, render_pyproject, render_readme, target_table_for_runtime, wheel_version
from builder.common.elfinfo import read_elf
from builder.package.staging import PAYLOAD_MARKER, Payload, WheelKind, _copy_file, find_external_tools, stage_payload
from builder.common.wheel_reader import WheelReport, grafted_name, inspect_wheel


log = logging.getLogger(__name__)


def verify_repaired(report: WheelReport, payload: Payload, spec: RuntimeSpec,
                    hashes: Mapping[str, str]) -> list[str]:
    """Post-condition of the repair, not in check/: it needs the staging analysis, which the wheel does not carry.

    Compares the repaired wheel with the payload's analysis (the tools, the closure
    auditwheel should graft under the names its sha256 gives, the graft that opens
    each dlopen'd library); returns warnings, raises on errors. What the wheel alone
    shows (manylinux tag, $ORIGIN RPATHs, dlopen'd libraries beside their opener, ...)
    is `moshi-build verify`'s (check/verify.py and check/checks/), which the pipeline runs next.
    """
    problems, warnings = [], []
    kind = payload.kind
    libs_prefix = kind.libs_dir + "/"
    for tool in payload.tools:
        member = posixpath.join(kind.package, kind.bin_dir, tool)
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
    with_debug = sorted(m for m, facts in report.elf.items() if facts.debug)
    if with_debug and spec.strip:
        warnings.append(f"ELF files still carrying debug sections: {', '.join(with_debug)}")
    for soname, opener in payload.openers.items():
        if libs_prefix + expected[opener.soname] not in report.elf:
            problems.append(f"{opener.soname} (opens {soname}) was not grafted into {libs_prefix}")
    if problems:
        raise BuildStepError(f"{report.path.name}: " + "; ".join(problems))
    return warnings


@dataclasses.dataclass
class WheelJob:
    """What one wheel's stages share: the request, checked, and the names derived from it."""
    kind: str                        # "single", "base" or "target"
    target: str | None
    layout: WheelKind
    spec: RuntimeSpec
    tools: Sequence[str]
    components: list[Component]
    version: str                     # the wheel's version (wheel_version())
    upstream: dict
    build_info: dict                 # without the stand-ins and kernel targets, which go elsewhere
    standins: list
    kernel_targets: object
    epoch: int                       # SOURCE_DATE_EPOCH of every member
    ext: object                      # the external tools (strip, patchelf, ...)
    out_dir: Path
    log_path: Path
    echo: Callable[[str], None]
    start: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def distribution(self) -> str:
        return self.layout.distribution

    @property
    def norm(self) -> str:
        return normalized_name(self.distribution)

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self.start:.0f} s]"


def build_wheel(*, target: str | None, prefixes: Mapping[str, Path], tools: Sequence[str], runtime_root: Path,
                components: Sequence[Component | Sequence | Mapping], out_dir: Path, version: str,
                build_number: int = 0, spec: RuntimeSpec | None = None,
                template_dir: Path = TEMPLATE_DIR, work_dir: Path | None = None, keep_work: bool = False,
                build_info: Mapping | None = None, echo: Callable[[str], None] = print,
                compile_library: standins_mod.CompileLibrary = standins_mod.host_compiler,
                kind: str = "single", provides: Sequence[str] = (), upstream: Mapping | None = None,
                base_floor: Mapping | None = None, models: Mapping | None = None) -> Path:
    """Build, repair and check one wheel; returns the repaired wheel's path.

    kind:      "single" (everything for `target`), "base" (target None: the tools, all that
               is not target-specific and the shared runtime) or "target" (`target`'s GPU
               libraries; `provides` = the base wheel's SONAMEs it may link), docs/WHEEL-PAIR.md
    prefixes:  step name -> install prefix (a target wheel gets only its per-target steps')
    tools:     executables to wrap as console scripts (see find_tools()); none in a target wheel
    runtime_root: root filesystem the libraries come from ("/" for the host)
    components: (name, version, SPDX license, license file paths) per bundled component
    version:   the main component's release; the wheel gets version_format of it
    spec:      the runtime rules (runtime.toml; its [[dlopen]] is the only list of dlopen'd libraries)
    build_info: facts of the build environment for the wheel's JSON (ROCm stack, versions, the
               stand-ins it generated, rocBLAS's kernel targets)
    upstream:  the application's source (upstream_info()): name, release, commit, date, url; its
               date goes into the version, all of it into the wheel's JSON, README and URLs
    base_floor: a target wheel's base wheel's glibc floor record (floor_of()), when runtime.toml has one
    models:    the application's model lists (package/models.py collect()): the base wheel's models.json
    """
    spec = spec or rules.load_runtime_spec()
    job = _start_job(kind=kind, target=target, tools=tools, spec=spec, components=components, version=version,
                     build_number=build_number, build_info=build_info, upstream=upstream, provides=provides,
                     base_floor=base_floor, out_dir=out_dir, echo=echo)
    work = Path(tempfile.mkdtemp(prefix=f".{job.norm}-", dir=work_dir or job.out_dir))
    # auditwheel unpacks and re-zips: the folders it makes (and stores) get the umask's mode
    umask = os.umask(0o022)
    try:
        # 1. payload, with the wheel's record (_runtime.json / _target.json) and models.json
        payload = stage_payload(root=work / "payload", prefixes=prefixes, tools=tools, runtime_root=runtime_root,
                                gpu_target=target, spec=spec, ext=job.ext, log_path=job.log_path, echo=echo,
                                standins=job.standins, compile_library=compile_library, kind=job.layout)
        floor_record = payload.glibc_floor if kind == "base" else dict(base_floor or {}) or None
        info_file, shared = _write_record(job, payload, floor_record)
        if models and kind != "target":
            (payload.package_dir / "models.json").write_text(json.dumps(models, indent=1, sort_keys=True) + "\n")
        (payload.root / PAYLOAD_MARKER).write_text(json.dumps(
            {"prefixes": {k: str(v) for k, v in prefixes.items()}, "runtime_root": str(runtime_root)}, indent=2))
        # 2. project, 3. plain wheel, 4. repair, 5. check and publish
        project = _make_project(job, work, template_dir, payload, info_file, shared)
        built = _pack(job, work, project, payload)
        repaired, hashes = _repair(job, work, built, payload, floor_record)
        return _check_and_publish(job, repaired, payload, hashes)
    finally:
        os.umask(umask)
        if keep_work:
            echo(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _start_job(*, kind: str, target: str | None, tools: Sequence[str], spec: RuntimeSpec, components,
               version: str, build_number: int, build_info: Mapping | None, upstream: Mapping | None,
               provides: Sequence[str], base_floor: Mapping | None, out_dir: Path,
               echo: Callable[[str], None]) -> WheelJob:
    """The request checked (kind, target, tools, the floor's needs, license files), its log opened."""
    upstream = dict(upstream or {})
    build_info = dict(build_info or {})
    standins = list(build_info.pop("standins", []) or [])
    kernel_targets = build_info.pop("rocblas_kernel_targets", None)
    _check_request(kind, target, tools, spec, base_floor)
    layout = {"single": lambda: WheelKind.single(spec, target), "base": lambda: WheelKind.base(spec),
              "target": lambda: WheelKind.target(spec, target, provides)}[kind]()
    comps = [Component.coerce(c) for c in components]
    for c in comps:
        for f in c.license_files:
            if not f.is_file():
                raise BuildStepError(f"license file of {c.name} not found: {f}")
    wheel_ver = wheel_version(version, build_number, spec.version_format, upstream.get("date"))
    ext = find_external_tools(spec.strip)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{normalized_name(layout.distribution)}-{wheel_ver}.log"
    log_path.write_text("")
    echo(f"{layout.distribution} {wheel_ver}: log {log_path}")
    return WheelJob(kind=kind, target=target, layout=layout, spec=spec, tools=tools, components=comps,
                    version=wheel_ver, upstream=upstream, build_info=build_info, standins=standins,
                    kernel_targets=kernel_targets, epoch=source_date_epoch(upstream), ext=ext, out_dir=out_dir,
                    log_path=log_path, echo=echo)


def _check_request(kind: str, target: str | None, tools: Sequence[str], spec: RuntimeSpec,
                   base_floor: Mapping | None) -> None:
    if kind not in ("single", "base", "target"):
        raise ConfigurationError(f"unknown wheel kind {kind!r}")
    if kind != "base" and not gfx.is_gfx_name(target or ""):
        raise TargetError(f"{target!r} is not a gfx target name")
    if kind != "target" and not tools:
        raise ConfigurationError("no tools to package: pass the executables the build produced")
    if kind == "base" and not spec.base_distribution:
        raise ConfigurationError("runtime.toml has no wheel.base_distribution: a base wheel needs a name")
    if spec.glibc_floor is not None and kind == "single":
        raise ConfigurationError("runtime.toml [glibc_floor] needs the base wheel's compatibility library: "
                                 "make a base and target wheels, not a self-contained one")
    if spec.glibc_floor is not None and kind == "target" and not base_floor:
        raise ConfigurationError("a target wheel with a glibc floor needs its base wheel's floor record "
                                 "(its _runtime.json 'glibc_floor'); build the base wheel with this moshi-build")


def _write_record(job: WheelJob, payload: Payload, floor_record: Mapping | None) -> tuple[Path, dict]:
    """The wheel's own record: _target.json in a target wheel, _runtime.json otherwise (docs/WHEEL-PAIR.md).
    Returns (its path, the part every kind shares)."""
    kind, spec, system = job.kind, job.spec, payload.system
    shared = {
        "kind": kind, "distribution": job.distribution, "version": job.version,
        "components": [{"name": c.name, "version": c.version, "license": c.license} for c in job.components],
        "system_packages": [{"package": p.package, "version": p.version, "license": p.license,
                             "libraries": list(p.libraries)} for p in system],
        "build": job.build_info,
        # The application's pinned source: the version's date and the commit it was built from.
        "upstream": job.upstream,
        # Generated libraries standing in for a package (stacks.toml, runtime.toml), with what they define.
        "standins": [s for s in job.standins if any(p.package == s.get("package") for p in system)]
                    + payload.standins,
        # runtime.toml's [[dlopen]] rules the wheel was made with: `moshi-build verify` checks them.
        "dlopen": [r.to_json() for r in spec.dlopen],
    }
    if floor_record:
        shared["glibc_floor"] = floor_record
    if kind == "target":
        backends = sorted(f.name for f in payload.elf_files if f.parent == payload.package_dir
                          and f.name not in payload.dlopened)
        info_file = payload.package_dir / "_target.json"
        info = {**shared, "gpu_target": job.target, "base": spec.base_distribution,
                "requires": f"{spec.base_distribution}=={job.version}",
                "backend": backends[0] if len(backends) == 1 else backends,
                "env": payload.env, "library_dirs": [".", f"../{job.layout.libs_dir}"]}
    else:
        info_file = payload.package_dir / "_runtime.json"
        info = {**shared, "package": spec.package,
                "tools": list(job.tools), "entry_points": entry_points(job.tools), "bin_dir": spec.bin_dir,
                "library_dirs": [spec.bin_dir, f"../{job.layout.libs_dir}"],
                "env": payload.env,
                "launcher": {"device_flags": list(spec.device_flags),
                             "device_aliases": [list(a) for a in spec.device_aliases]},
                "distribution_pattern": spec.distribution,
                "targets": target_table_for_runtime(job.kernel_targets,
                                                    job.build_info.get("rocblas_label", "rocBLAS"))}
        if kind == "single":
            info["gpu_target"] = job.target
            del info["kind"]
        else:
            info.update(target_distribution=spec.distribution, target_package=spec.target_package_for("{gpu_target}"),
                        provides=payload.provides)
    info_file.write_text(json.dumps(info, indent=2) + "\n")
    return info_file, shared


def _make_project(job: WheelJob, work: Path, template_dir: Path, payload: Payload, info_file: Path,
                  shared: Mapping) -> Path:
    """A copy of the wheel template with its license files, pyproject.toml, README.md and SBOM."""
    kind, spec, target, system = job.kind, job.spec, job.target, payload.system
    project = work / "project"
    shutil.copytree(template_dir, project, ignore=shutil.ignore_patterns("*.in", "__pycache__", "build"))
    licenses = project / "LICENSES"
    for c in job.components:
        for i, f in enumerate(c.license_files):
            dest = licenses / c.name / f.name
            if dest.exists():
                dest = licenses / c.name / f"{i}-{f.name}"
            _copy_file(f, dest, 0o644)
    for p in system:
        _copy_file(p.copyright, licenses / "system" / p.package / "copyright", 0o644)
    expression = license_expression([c.license for c in job.components] + [p.license for p in system])
    summary = spec.base_summary if kind == "base" else spec.summary.format(gpu_target=target)
    rocm_stack = job.build_info.get("rocm_stack")
    (project / "pyproject.toml").write_text(render_pyproject(
        (template_dir / "pyproject.toml.in").read_text(), name=job.distribution, version=job.version,
        summary=summary, license=expression,
        keywords=[k.format(gpu_target=target) for k in spec.keywords if target or "{gpu_target}" not in k],
        packages=[f"src/{spec.package}"] if kind != "target" else [],
        scripts=package_scripts(spec.package, entry_points(job.tools)) if kind != "target" else {},
        dependencies=[f"{spec.base_distribution}=={job.version}"] if kind == "target" else [],
        urls={**dict(spec.project_urls), **upstream_urls(job.upstream)}, rocm_stack=rocm_stack))
    readme = {"single": "README.md.in", "base": "README-base.md.in", "target": "README-target.md.in"}[kind]
    (project / "README.md").write_text(render_readme(
        (template_dir / readme).read_text(), distribution=job.distribution, gpu_target=target or "",
        gpus=_known_gpus(target) if target else [], package=spec.package, bin_dir=spec.bin_dir,
        tools=list(job.tools), components=job.components, system=system,
        base=spec.base_distribution, version=job.version, target_package=job.layout.package)
        + provenance_paragraph(job.upstream, rocm_stack))
    # The SBOM (PEP 770): wheels/CMakeLists.txt installs sboms/ into the .dist-info.
    (project / sbom.SBOM_DIR).mkdir()
    (project / sbom.SBOM_DIR / sbom.SBOM_FILE).write_text(sbom.for_wheel(
        payload=payload, components=job.components, standins=shared["standins"], info_file=info_file,
        project=project, distribution=job.distribution, version=job.version, license=expression,
        date=job.upstream.get("date"), build={**job.build_info, "kind": kind, "gpu_target": target,
                                              "upstream": job.upstream}))
    return project


def _pack_env(job: WheelJob, payload: Payload) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "AUDITWHEEL_LD_LIBRARY_PATH")}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PATH": job.ext.path_env,
                "MOSHI_WHEEL_PAYLOAD": str(payload.root),
                # scikit-build-core and auditwheel stamp every zip member with it: the
                # same pins give the same bytes (docs/REPRODUCIBLE.md)
                "SOURCE_DATE_EPOCH": str(job.epoch)})
    return env


def _pack(job: WheelJob, work: Path, project: Path, payload: Payload) -> Path:
    """The plain wheel: scikit-build-core installs the payload (pip wheel, no isolation, no index)."""
    raw = work / "raw"
    job.echo(f"{job.elapsed()} packing the payload with scikit-build-core")
    check_logged([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "--wheel-dir", str(raw),
                  "--config-settings", f"cmake.define.MOSHI_WHEEL_PAYLOAD={payload.root}",
                  "--config-settings", f"build-dir={work / 'cmake-build'}",
                  str(project)], job.log_path, "pip wheel (scikit-build-core)", env=_pack_env(job, payload), cwd=work)
    built = sorted(raw.glob("*.whl"))
    if len(built) != 1:
        raise BuildStepError(f"pip wheel produced {len(built)} wheels in {raw}, expected one")
    if not built[0].name.startswith(f"{job.norm}-{job.version}-"):
        raise BuildStepError(f"{built[0].name}: expected a wheel named {job.norm}-{job.version}-*; the dlopen'd "
                             f"libraries were staged for auditwheel's folder {job.layout.libs_dir}")
    return built[0]


def _repair(job: WheelJob, work: Path, built: Path, payload: Payload,
            floor_record: Mapping | None) -> tuple[Path, dict[str, str]]:
    """auditwheel repair against the runtime root, then the glibc floor (or the grafts' RUNPATH to
    the base wheel). Returns (the repaired wheel, each predicted graft's short sha256)."""
    hashes = {s: sha256_file(lib.realpath)[:8] for s, lib in payload.closure.libraries.items()}
    repaired_dir = work / "repaired"
    repaired_dir.mkdir()
    job.echo(f"{job.elapsed()} auditwheel repair ({len(payload.closure.libraries)} libraries to graft)")
    # No --strip: it would run strip over files patchelf already rewrote (ours), which
    # leaves a dynamic section the loader no longer reads (auditwheel issue 716). Our files
    # are stripped before patching; grafted ones are checked for debug sections below.
    argv = [sys.executable, "-m", "auditwheel", "repair", "--ldpaths", os.pathsep.join(map(str, payload.ldpaths)),
            "-L", job.spec.lib_sdir, "-w", str(repaired_dir)]
    for soname in sorted(job.layout.provides):  # the base wheel's: linked, not grafted
        argv += ["--exclude", soname]
    check_logged(argv + [str(built)], job.log_path, "auditwheel repair", env=_pack_env(job, payload),
                 cwd=work)
    repaired = sorted(repaired_dir.glob("*.whl"))
    if len(repaired) != 1:
        raise BuildStepError(f"auditwheel wrote {len(repaired)} wheels, expected one; see {job.log_path}")
    if floor_record:
        return _lower_to_floor(repaired[0], job.layout, job.spec, floor_record, job.ext, job.log_path, job.echo,
                               job.epoch), hashes
    if job.layout.provides:
        _link_grafts_to_base(repaired[0], job.layout, job.ext, job.log_path, job.echo, job.epoch)
    return repaired[0], hashes


def _check_and_publish(job: WheelJob, repaired: Path, payload: Payload, hashes: Mapping[str, str]) -> Path:
    """The repair's post-condition checked, then the wheel moved into the output folder."""
    job.echo(f"{job.elapsed()} checking {repaired.name}")
    report = inspect_wheel(repaired)
    for w in verify_repaired(report, payload, job.spec, hashes):
        job.echo(f"warning: {w}")
    final = job.out_dir / repaired.name
    os.replace(repaired, final)
    job.echo(f"{job.elapsed()} {final.name}: {report.size / 1e6:.1f} MB, {report.installed_size / 1e6:.1f} MB "
             f"installed, tags {', '.join(report.tags)}")
    return final


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def floor_of(base_wheel: Path) -> dict | None:
    """The glibc floor record of a base wheel's _runtime.json (None: it has none)."""
    record = _base_record(base_wheel)[0].get("glibc_floor")
    return record if isinstance(record, dict) else None


def _lower_to_floor(path: Path, layout: WheelKind, spec: RuntimeSpec, record: Mapping, ext, log_path: Path,
                    echo: Callable[[str], None], epoch: int) -> Path:
    """runtime.toml [glibc_floor], on the repaired wheel (glibc_floor.py says how): every ELF file
    lowered to the floor, every graft given a RUNPATH that reaches the base wheel's folder (the
    compatibility library, libstdc++ and, for a target wheel, libamdhip64), each file proven to
    load on the floor, and the wheel tagged with the floor's policy. Returns the wheel's new path."""
    from auditwheel.wheeltools import InWheelCtx, add_platforms
    from builder.package import glibc_floor

    floor = spec.glibc_floor
    table = glibc_floor.load_table(floor.version)
    compat = {name: {floor.baseline} for name in record["compat"]["symbols"]}
    private_versions = {v for vs in record.get("private_versions", {}).values() for v in vs}
    run = lambda argv: check_logged(argv, log_path, f"patchelf {Path(argv[-1]).name}")
    arch = os.uname().machine
    with _environment(SOURCE_DATE_EPOCH=str(epoch)), InWheelCtx(path, path) as ctx:
        tree = Path(ctx.path)
        files = sorted(f for f in tree.rglob("*") if f.is_file() and not f.is_symlink() and read_elf(f) is not None)
        lowered, problems = 0, []
        for f in files:
            graft = f.parent.name == layout.libs_dir
            change = glibc_floor.lower_file(f, floor, ext.patchelf, run,
                                            runpath=layout.graft_runpath if graft else None)
            lowered += bool(change.rewritten)
            problems += glibc_floor.needs_at_floor(f, floor, table, compat, private_versions)
        if problems:
            raise BuildStepError(f"{path.name}: {len(problems)} need(s) the glibc {floor.version} floor cannot meet: "
                                 + "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else ""))
        tag = floor.platform_tag(arch)
        tags = path.name[:-len(".whl")].split("-")[-1].split(".")
        out = add_platforms(ctx, [tag], [t for t in tags if t != tag])
    if out != path:
        path.unlink()
    echo(f"glibc {floor.version} floor: {lowered} of {len(files)} ELF files lowered, every need met "
         f"(the floor's glibc, {floor.compat_soname}), tagged {floor.platform_tag(arch)}")
    return out


def _base_record(base_wheel: Path) -> tuple[dict, str]:
    """(a base wheel's _runtime.json, its member name)."""
    with zipfile.ZipFile(base_wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith("/_runtime.json") and n.count("/") == 1]
        if len(names) != 1:
            raise BuildStepError(f"{base_wheel.name}: expected one <package>/_runtime.json, found {len(names)}")
        info = json.loads(zf.read(names[0]))
    if not isinstance(info, dict):
        raise BuildStepError(f"{base_wheel.name}: {names[0]} is not a JSON object")
    return info, names[0]


def provided_by(base_wheel: Path) -> list[str]:
    """The SONAMEs a base wheel's bin_dir holds for target wheels to link (its _runtime.json)."""
    info, member = _base_record(base_wheel)
    if info.get("kind") != "base" or not info.get("provides"):
        raise BuildStepError(f"{base_wheel.name} is not a base wheel (no 'provides' in {member})")
    return list(info["provides"])


def _link_grafts_to_base(path: Path, layout: WheelKind, ext, log_path: Path, echo: Callable[[str], None],
                         epoch: int) -> None:
    """A target wheel's grafts that load a library of the base wheel (librocblas needs
    libamdhip64) get a RUNPATH entry for the base's folder. auditwheel sets a graft's RUNPATH
    to $ORIGIN, so this is done in the repaired wheel (its RECORD rewritten by auditwheel's
    own InWheelCtx); ld.so then finds the base's library whatever loads the graft first."""
    from auditwheel.wheeltools import InWheelCtx

    # InWheelCtx re-zips in this process and stamps the members with SOURCE_DATE_EPOCH
    with _environment(SOURCE_DATE_EPOCH=str(epoch)), InWheelCtx(path, path) as ctx:
        for lib in sorted((Path(ctx.path) / layout.libs_dir).glob("*.so*")):
            facts = read_elf(lib)
            if facts is None or not set(facts.needed) & layout.provides:
                continue
            check_logged([ext.patchelf, "--set-rpath", layout.runpath, str(lib)], log_path, f"patchelf {lib.name}")
            echo(f"{lib.name}: RUNPATH {layout.runpath} (it loads "
                 f"{', '.join(sorted(set(facts.needed) & layout.provides))} of the base wheel)")
