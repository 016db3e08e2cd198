"""The whole chain as functions: sources -> environment -> targets -> builds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from builder.sources import fetch as sources
from builder.build import kernel_guard, steps
from builder.rocm import targets
from builder.common.cache import Cache
from builder.envs import BuildEnvironment
from builder.sources.recipe import Recipe, all_steps


@dataclasses.dataclass
class BuildReport:
    trees: list[sources.SourceTree]
    results: list[steps.StepResult]
    seconds: float

    def to_json(self) -> dict:
        return {
            "seconds": round(self.seconds, 1),
            "sources": [t.lock_entry() for t in self.trees],
            "steps": [
                {"step": r.step, "target": r.target, "key": r.key, "prefix": str(r.prefix),
                 "cached": r.cached, "seconds": round(r.seconds, 1), "log": str(r.log) if r.log else None}
                for r in self.results
            ],
        }


def build(recipes: dict[str, Recipe], gpu_targets: list[str], environment: BuildEnvironment,
          fetch_options: sources.FetchOptions, jobs: int | None = None, progress: bool = True,
          echo=print) -> BuildReport:
    start = time.monotonic()
    # Unknown names fail before the environment is created (that can take minutes).
    targets.check_known_targets(gpu_targets)
    # Targets the stack's rocBLAS has no kernels for fail before the root is made, too.
    targets.check_targets(gpu_targets, environment)
    environment.ensure()
    # Reject bad targets before any download or build.
    targets.check_targets(gpu_targets, environment)
    env_root = getattr(environment, "root", None)
    if env_root is not None and Path(env_root) not in fetch_options.apt_roots:
        # The build root's apt sources name the archive its packages came from.
        fetch_options = dataclasses.replace(fetch_options, apt_roots=(*fetch_options.apt_roots, Path(env_root)))
    trees = {t.component: t for t in sources.fetch_all(list(recipes.values()), fetch_options)}
    kernel_guard.check_left_out(recipes, trees)
    cache = fetch_options.cache
    # The cache at a fixed path inside a build root: the same bytes from any cache location.
    with environment.session([cache.root], aliases={cache.root: steps.NEUTRAL_ROOT}) as session:
        ctx = steps.BuildContext(
            cache=cache,
            session=session,
            environment_id=environment.identity(),
            base_env=session.base_env(),
            jobs=jobs or os.cpu_count() or 1,
            progress=progress,
            echo=echo,
            variables={k: v for k, v in environment.info().items() if isinstance(v, str)},
        )
        results = steps.build_all(all_steps(recipes), trees, gpu_targets, ctx)
    report = BuildReport(list(trees.values()), results, time.monotonic() - start)
    record = cache.root / "last-build.json"
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2))
    os.replace(tmp, record)
    return report


WHEEL_SETS = ("all", "base", "targets")


def make_wheels(recipes: dict[str, Recipe], report: BuildReport, gpu_targets: list[str],
                environment: BuildEnvironment, out_dir: Path, build_number: int = 0,
                envs_dir: Path | None = None, echo=print, wheels: str = "all",
                cache: Cache | None = None) -> list[Path]:
    """The base wheel and one wheel per gfx target (docs/WHEEL-PAIR.md), repaired and verified,
    from the staged prefixes of a build; the base wheel's path comes first.

    wheels: "all", "base" (no target wheel) or "targets" (the base wheel is still made, in a
    folder that is then deleted: the target wheels are checked against it; a CI matrix makes
    and publishes the base in a job of its own).
    cache:  where verified wheels are kept by the key of their inputs (package/wheel_cache.py):
    a wheel whose inputs did not change is copied from there, not built again. None: build
    every wheel (the second build of --check-reproducible)."""
    if wheels not in WHEEL_SETS:
        raise ValueError(f"wheels must be one of {WHEEL_SETS}, not {wheels!r}")
    from builder.package import project
    from builder.package import staging
    from builder.package import wheel  # heavy imports only when wheels are made

    app = next(r for r in recipes.values() if r.role == "application")
    trees = {t.component: t for t in report.trees}
    components = [project.component_from_recipe(r, trees[r.name].path, trees[r.name]) for r in recipes.values()]
    runtime_root = Path(getattr(environment, "root", Path("/")))
    # The clean root that runs the wheel's comgr for verify lives beside the build roots.
    envs_dir = Path(envs_dir or getattr(environment, "cache_dir", None) or Cache(None).envs)
    env_info = environment.info()
    build_info = {
        "rocm_stack": env_info.get("rocm_stack"),
        "environment": environment.identity(),
        **{k: env_info.get(k) for k in ("hip_version", "clang_version", "glibc_version", "rocblas_version",
                                        "hip_offload_flags", "gcc_version", "cmake_version")},
        # The Debian suites of the build root (the wheel's SBOM names them)
        "debian_suites": [s for s in [getattr(getattr(environment, "spec", None), "base_suite", None),
                                      *getattr(getattr(environment, "spec", None), "extra_suites", [])] if s],
        "rocblas_label": getattr(environment, "rocblas_label", "rocBLAS"),
        "rocblas_kernel_targets": sorted(environment.rocblas_kernel_targets()),
        "standins": env_info.get("standins", []),
    }
    # One base wheel for every target, then a thin wheel per target (docs/WHEEL-PAIR.md).
    per_target = {s.step for r in recipes.values() for s in r.build if s.per_target}
    base_prefixes = {r.step: r.prefix for r in report.results if r.target is None}
    tools = staging.find_tools(next(base_prefixes[s.step] for s in app.build))
    in_base = [c for r, c in zip(recipes.values(), components) if any(not s.per_target for s in r.build)]
    in_targets = [c for r, c in zip(recipes.values(), components) if any(s.per_target for s in r.build)]
    models_doc = _model_lists(app, trees, echo)
    if models_doc is not None:   # in the wheel key and the record: a new list is a new base wheel
        build_info["models_digest"] = hashlib.sha256(json.dumps(models_doc, sort_keys=True).encode()).hexdigest()
    common = dict(runtime_root=runtime_root, out_dir=out_dir, version=app.version, build_number=build_number,
                  build_info=build_info, echo=echo, compile_library=environment_compiler(environment),
                  upstream=project.upstream_info(app))
    base_dir = Path(out_dir) / f".base-{os.getpid()}" if wheels == "targets" else Path(out_dir)
    try:
        made = _WheelMaker(report, runtime_root, envs_dir, echo, cache, common)
        base = made.wheel(kind="base", target=None, prefixes=base_prefixes, tools=tools, components=in_base,
                          out_dir=base_dir, models=models_doc)
        paths = [base] if wheels != "targets" else []
        if wheels != "base":
            provides, base_floor = wheel.provided_by(base), wheel.floor_of(base)
            for target in gpu_targets:
                prefixes = {r.step: r.prefix for r in report.results if r.target == target and r.step in per_target}
                paths.append(made.wheel(kind="target", target=target, prefixes=prefixes, tools=[],
                                        components=in_targets, provides=provides, base=base, base_floor=base_floor))
    except BaseException:
        if wheels == "targets" and base_dir.exists():
            echo(f"the base wheel made to check the target wheels is kept in {base_dir}")
        raise
    if wheels == "targets":
        shutil.rmtree(base_dir, ignore_errors=True)
    return paths


@dataclasses.dataclass
class _WheelMaker:
    """One wheel: copied from the wheel cache when its inputs' key is there, else built
    (wheel.build_wheel), verified and then kept in the cache."""
    report: BuildReport
    runtime_root: Path
    envs_dir: Path
    echo: Callable[[str], None]
    cache: Cache | None
    common: dict

    def wheel(self, *, kind: str, target: str | None, prefixes, tools, components, provides=(),
              base: Path | None = None, out_dir: Path | None = None, base_floor: dict | None = None,
              models: dict | None = None) -> Path:
        from builder.package import wheel
        from builder.package import wheel_cache

        common = {**self.common, **({"out_dir": out_dir} if out_dir is not None else {})}
        label = kind if target is None else f"{kind}-{target}"
        store = wheel_cache.WheelCache(self.cache) if self.cache is not None else None
        if store is not None:
            key, inputs = wheel_cache.wheel_key(
                kind=kind, target=target, prefixes=prefixes, tools=tools, components=components,
                version=common["version"], build_number=common["build_number"], build_info=common["build_info"],
                upstream=common["upstream"], provides=provides, base_floor=base_floor)
            cached = store.reuse(label, key, common["out_dir"], self.echo)
            if cached is not None:
                return cached
        path = wheel.build_wheel(kind=kind, target=target, prefixes=prefixes, tools=tools, components=components,
                                 **({"provides": provides} if provides else {}),
                                 **({"base_floor": base_floor} if base_floor else {}),
                                 **({"models": models} if models else {}), **common)
        verify_built_wheel(path, self.report, self.runtime_root, self.envs_dir, self.echo,
                           **({"base": base} if base is not None else {}))
        if store is not None:
            store.store(label, key, inputs, path)
        return path


def _model_lists(app, trees: dict, echo) -> dict | None:
    """The application's model lists from its fetched source (recipe [models]), or None."""
    if not app.model_lists or app.name not in trees:
        return None
    from builder.package import models

    doc = models.collect(Path(trees[app.name].path), app.model_lists, dict(app.model_tools),
                         upstream=f"{app.name} {app.commit or app.version}", also=dict(app.model_also))
    echo(f"model lists: {len(doc['models'])} models from {app.name}'s {', '.join(app.model_lists)}"
         + (f"; not offered: {', '.join(f'{k} ({v})' for k, v in doc['skipped'].items())}" if doc["skipped"] else ""))
    return doc


def environment_compiler(environment: BuildEnvironment):
    """Stand-ins (builder/rocm/standins.py) are compiled by the build environment's gcc: the glibc
    they link against is the one the wheel's manylinux tag is computed from."""
    from builder.rocm import standins
    from builder.errors import BuildStepError

    def compile_library(source: Path, output: Path, soname: str, argv: list[str] | None = None) -> None:
        with environment.session([source.parent]) as session:
            done = session.run(argv or standins.compile_argv("gcc", source, output, soname), timeout=600)
        if done.returncode != 0:
            raise BuildStepError(f"compiling the stand-in {soname} in the build environment failed: "
                                 f"{(done.stderr or done.stdout).strip()[-400:]}")
    return compile_library


def verify_built_wheel(path: Path, report: BuildReport, runtime_root: Path, envs_dir: Path,
                       echo=print, base: Path | None = None) -> None:
    """`moshi-build verify` on a fresh wheel; a failing one moves to OUT/rejected/ and the run ends."""
    from builder.check import code_selection
    from builder.check import verify
    from builder.errors import WheelVerificationError

    result = verify.verify_wheel(path, build_paths=verify.build_dirs_of(report, runtime_root),
                                 probe_root=lambda needed, suite=None: code_selection.default_probe_root(
                                     needed, envs_dir, echo, suite),
                                 **({"base": base} if base is not None else {}))
    for line in result.lines():
        echo(f"  {line}")
    echo(f"verified {path.name} in {result.seconds:.0f} s")
    if not result.ok:
        rejected = path.parent / "rejected" / path.name
        rejected.parent.mkdir(exist_ok=True)
        os.replace(path, rejected)
        failed = "; ".join(f"{c.name}: {c.problems[0] if c.problems else c.summary}" for c in result.failures)
        raise WheelVerificationError(f"{path.name} fails verification ({failed}); kept as {rejected}, "
                                     f"`moshi-build verify {rejected}` repeats the checks")


REPRODUCE_MARKER = ".moshi-build-reproduce"
_REPRODUCE_MADE_BY = "moshi-build --check-reproducible"


def _reproduce_contents(folder: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """What `folder` holds below it: regular files (relative path -> sha256), links (-> target),
    and anything else (special files), the marker left out. Links are never followed."""
    from builder.common.files import sha256_file

    files, links, other = {}, {}, []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames) + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if rel == REPRODUCE_MARKER:
                continue
            if path.is_symlink():
                links[rel] = os.readlink(path)
            elif path.is_file():
                files[rel] = sha256_file(path)
            elif not path.is_dir():
                other.append(rel)
    return files, links, other


def _record_reproduce(folder: Path) -> None:
    """The marker: what this run wrote into `folder` (names and sha256), the proof the next run
    needs before it deletes anything there."""
    from builder.common.files import write_atomic

    files, links, _ = _reproduce_contents(folder)
    write_atomic(folder / REPRODUCE_MARKER, json.dumps({"made_by": _REPRODUCE_MADE_BY, "files": files,
                                                        "links": links}, indent=1, sort_keys=True) + "\n",
                 doing="recording what the second build wrote")


def _remove_reproduce(folder: Path) -> None:
    """Delete `folder` if it holds exactly what its marker says a previous run wrote; else
    ConfigurationError (one line) and nothing is deleted."""
    from builder.errors import ConfigurationError

    marker = folder / REPRODUCE_MARKER

    def refuse(why: str) -> ConfigurationError:
        return ConfigurationError(f"{folder} exists and {why}: it is not deleted; move it away or choose another --out")

    if folder.is_symlink() or not folder.is_dir():
        raise refuse("was not made by --check-reproducible (it is a link or not a folder)")
    if marker.is_symlink() or not marker.is_file():
        raise refuse("was not made by --check-reproducible (no marker)")
    try:
        record = json.loads(marker.read_bytes()[:16 << 20].decode("utf-8"))
        recorded_files, recorded_links = record["files"], record["links"]
        if record.get("made_by") != _REPRODUCE_MADE_BY or not isinstance(recorded_files, dict) \
                or not isinstance(recorded_links, dict):
            raise ValueError("another marker")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise refuse(f"its marker {REPRODUCE_MARKER} does not say which files --check-reproducible wrote "
                     "(made by an older moshi-build, or not by it)") from None
    files, links, other = _reproduce_contents(folder)
    unknown = sorted(set(files) - set(recorded_files)) + sorted(set(links) - set(recorded_links)) + other
    changed = sorted(rel for rel, sha in files.items() if recorded_files.get(rel) != sha) + \
        sorted(rel for rel, target in links.items() if recorded_links.get(rel) != target)
    if unknown:
        raise refuse(f"holds {len(unknown)} file(s) --check-reproducible did not write (the first: {unknown[0]})")
    if changed:
        raise refuse(f"holds {len(changed)} file(s) changed since --check-reproducible wrote them "
                     f"(the first: {changed[0]})")
    for rel in list(files) + list(links):
        (folder / rel).unlink()
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda w: -len(Path(w[0]).parts)):
        if Path(dirpath) != folder:
            Path(dirpath).rmdir()      # empty now: only what this command wrote was there
    marker.unlink()
    folder.rmdir()


def check_reproducible(recipes: dict[str, Recipe], report: BuildReport, gpu_targets: list[str],
                       environment: BuildEnvironment, made: list[Path], build_number: int = 0,
                       envs_dir: Path | None = None, echo=print, wheels: str = "all"):
    """Build the wheels of `made` a second time from the same build prefixes, without the wheel
    cache, into a folder beside them, and compare each pair byte for byte (check/compare.py).
    Identical: the second folder is removed. Different: NotReproducibleError naming the first
    differing member and offset; the second build is kept. An existing OUT/reproduce is deleted
    only when its marker proves this command wrote all of it (names and sha256); else refused."""
    from builder.check.compare import compare_wheels
    from builder.errors import NotReproducibleError

    out_dir = Path(made[0]).parent
    second_dir = out_dir / "reproduce"
    if second_dir.exists() or second_dir.is_symlink():
        # only what a previous run can be proven to have written (its marker lists names and sha256) is deleted
        _remove_reproduce(second_dir)
    second_dir.mkdir(parents=True)
    _record_reproduce(second_dir)
    echo(f"building the wheels a second time into {second_dir} (the wheel cache unused)")
    try:
        again = make_wheels(recipes, report, gpu_targets, environment, second_dir, build_number=build_number,
                            envs_dir=envs_dir, echo=echo, wheels=wheels, cache=None)
    finally:
        _record_reproduce(second_dir)   # what the second build wrote: the next run may delete exactly that
    by_name = {p.name: p for p in again}
    comparisons = []
    for first in made:
        second = by_name.get(first.name)
        if second is None:
            raise NotReproducibleError(f"the second build made no {first.name} (it made {', '.join(sorted(by_name))}); "
                                       f"its wheels are kept in {second_dir}")
        comparisons.append(compare_wheels(first, second))
        echo(comparisons[-1].line())
    different = [c for c in comparisons if not c.identical]
    if different:
        raise NotReproducibleError(f"{len(different)} of {len(comparisons)} wheel(s) differ between two builds: "
                                   f"{different[0].line()}; the second build is kept in {second_dir} (the first "
                                   "may have come from the wheel cache: --no-wheel-cache builds both now)")
    _remove_reproduce(second_dir)
    return comparisons
