"""The command line: a thin layer over functions the tests call directly."""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path

from builder import __version__, check_python

check_python()  # before the imports that need a newer Python

import click  # noqa: E402

from builder.common.cache import Cache  # noqa: E402
from builder.errors import (ConfigurationError, FatalError, InterruptedByUser, NotAWheelError, from_os_error,  # noqa: E402
                            shorten, shorten_runs)
from builder.sources.recipe import DEFAULT_PATCHES_DIR, DEFAULT_RECIPES_DIR, load_recipes, select_application  # noqa: E402
from builder import pipeline  # noqa: E402
from builder.check import sizes  # noqa: E402
from builder.common.files import sha256_file, write_atomic  # noqa: E402
from builder.sources import fetch as sources  # noqa: E402
from builder.envs import default_stack_name, get_environment, get_stack, stack_names  # noqa: E402
from builder.rocm import targets  # noqa: E402
from builder.rocm.targets import parse_gpu_targets, targets_table  # noqa: E402


def source_options(func):
    """Options shared by every command that needs sources."""

    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                  envvar="MOSHI_BUILD_CACHE_DIR", help="Cache root (default: the user's cache directory).")
    @click.option("--mirror", "mirrors", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                  help="Directory searched by file name before the network (repeatable; env MOSHI_BUILD_MIRROR).")
    @click.option("--source", "source_overrides", multiple=True, metavar="NAME=PATH",
                  help="Use a local directory or archive as a component's source (recorded as unverified).")
    @click.option("--offline", is_flag=True, envvar="MOSHI_BUILD_OFFLINE",
                  help="Fail instead of touching the network.")
    @click.option("--recipes-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
                  default=DEFAULT_RECIPES_DIR, show_default=False, help="Directory of component recipes.")
    @click.option("--recipe", "extra_recipes", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  help="An extra recipe file (e.g. a test application standing in for moshi.cpp).")
    @click.option("--patches-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
                  default=DEFAULT_PATCHES_DIR, show_default=False, help="Directory of patches/<component>/.")
    @click.option("--no-progress", is_flag=True, help="No progress bars.")
    @functools.wraps(func)
    def wrapper(*, cache_dir, mirrors, source_overrides, offline, recipes_dir, extra_recipes,
                patches_dir, no_progress, **kwargs):
        recipes = load_recipes(recipes_dir, patches_dir, list(extra_recipes))
        opts = sources.FetchOptions(
            cache=Cache(cache_dir),
            mirrors=sources.check_mirrors(tuple(mirrors), sources.mirrors_from_env()),
            overrides=sources.parse_overrides(list(source_overrides)),
            offline=offline,
            progress=not no_progress,
        )
        # Staging folders that killed runs left behind (each under its entry's lock, if free).
        opts.cache.sweep_orphans(echo=lambda line: click.echo(f"moshi-build: {line}", err=True))
        return func(recipes=recipes, fetch_options=opts, **kwargs)

    return wrapper


def select(recipes: dict, names: tuple[str, ...]) -> list:
    unknown = [n for n in names if n not in recipes]
    if unknown:
        raise ConfigurationError(
            f"unknown component {shorten(', '.join(unknown))}; components: {', '.join(recipes)}"
        )
    return [recipes[n] for n in names] if names else list(recipes.values())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="moshi-build")
def cli() -> None:
    """Build ROCm wheels of moshi.cpp: a base wheel and one wheel per gfx target."""


@cli.command()
@click.argument("components", nargs=-1)
@click.option("--lock", "lock_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the lock of what was used (default: CACHE/sources.lock.json).")
@source_options
def fetch(components, lock_path, recipes, fetch_options):
    """Download, verify, extract and patch sources (all components by default)."""
    chosen = select(recipes, components)
    trees = sources.fetch_all(chosen, fetch_options)
    for t in trees:
        mark = "verified" if t.verified else "UNVERIFIED (local override)"
        click.echo(f"{t.component} {t.version}: {mark}, {t.pin[:23]}  from {t.origin}\n    -> {t.path}")
    lock_path = lock_path or fetch_options.cache.root / "sources.lock.json"
    sources.write_lock(trees, lock_path)
    click.echo(f"lock written to {lock_path}")


def rocm_option(func):
    return click.option("--rocm", type=click.Choice(stack_names()), default=default_stack_name(),
                        envvar="MOSHI_BUILD_ROCM", show_default=True,
                        help="ROCm stack of the Debian build root (builder/resources/stacks.toml).")(func)


def env_options(func):
    @click.option("--env", "env_kind", type=click.Choice(["auto", "host", "debian"]), default="auto",
                  envvar="MOSHI_BUILD_ENV", show_default=True,
                  help="Build environment: a ROCm >= 6.1 on this machine, or a Debian root filesystem.")
    @click.option("--check-valid-until/--no-check-valid-until", default=False, show_default=True,
                  help="Let apt reject expired Release files while creating the Debian environment.")
    @rocm_option
    @functools.wraps(func)
    def wrapper(*, env_kind, check_valid_until, rocm, **kwargs):
        # Commands with source options carry --cache-dir as cache_dir (passed on to them);
        # the env commands have only their own --cache-dir.
        cache_dir = kwargs.pop("env_cache_dir", None) or kwargs.get("cache_dir")
        environment = get_environment(env_kind, Cache(cache_dir).envs, check_valid_until=check_valid_until,
                                      rocm=rocm)
        return func(environment=environment, **kwargs)

    return wrapper


def env_cache_option(func):
    return click.option("--cache-dir", "env_cache_dir", type=click.Path(file_okay=False, path_type=Path),
                        envvar="MOSHI_BUILD_CACHE_DIR", help="Cache root (default: the user's cache directory).")(func)


@cli.command()
@click.option("--gpu-targets", required=True, metavar="LIST",
              help='gfx targets separated by ";" or ",", e.g. "gfx1100;gfx1030".')
@click.option("-j", "--jobs", type=click.IntRange(1), default=None, help="Parallel jobs (default: all cores).")
@click.option("--app", default=None, help="Application recipe to build (default: the only one, moshi.cpp).")
@env_options
@source_options
def build(gpu_targets, jobs, app, environment, recipes, fetch_options):
    """Fetch sources and build every component for the given gfx targets."""
    targets_list = parse_gpu_targets(gpu_targets)
    chosen = select_application(recipes, app)
    report = pipeline.build(chosen, targets_list, environment, fetch_options, jobs=jobs,
                            progress=fetch_options.progress, echo=click.echo)
    built = sum(not r.cached for r in report.results)
    click.echo(f"{len(report.results)} steps, {built} built, {len(report.results) - built} cached, "
               f"{report.seconds:.1f} s")


# The largest --build-number: 9 digits keep a wheel's file name far below 255 bytes.
from builder.package.project import MAX_BUILD_NUMBER  # noqa: E402  (one home)


@cli.command("all")
@click.option("--gpu-targets", required=True, metavar="LIST",
              help='gfx targets separated by ";" or ",", e.g. "gfx1100;gfx1030".')
@click.option("-j", "--jobs", type=click.IntRange(1), default=None, help="Parallel jobs (default: all cores).")
@click.option("--app", default=None, help="Application recipe to package (default: moshi.cpp).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("wheelhouse"),
              show_default=True, help="Where the wheels go.")
@click.option("--build-number", type=click.IntRange(0, MAX_BUILD_NUMBER), default=0, show_default=True,
              help="Our build number, appended to the application's release in the wheel version "
                   "(at most 9 digits: a wheel's file name must stay under 255 bytes).")
@click.option("--size-report", is_flag=True, help="List what takes the room in each wheel.")
@click.option("--wheels", "wheel_set", type=click.Choice(pipeline.WHEEL_SETS), default="all", show_default=True,
              help="base: only the shared moshi-rocm wheel (no per-target build); targets: only the "
                   "moshi-rocm-<gfx> wheels (a CI matrix makes the base once, the targets in parallel).")
@click.option("--wheel-cache/--no-wheel-cache", default=True, show_default=True,
              help="Copy a wheel whose inputs did not change from the cache (CACHE/wheels) instead of "
                   "building and verifying it again.")
@click.option("--check-reproducible", is_flag=True,
              help="Then build the wheels a second time, without the wheel cache, into OUT/reproduce and "
                   "compare the bytes (exit 17 naming the first difference).")
@env_options
@source_options
def all_cmd(gpu_targets, jobs, app, out_dir, build_number, size_report, wheel_set, wheel_cache, check_reproducible,
            environment, recipes, fetch_options):
    """The whole chain: build, then the base wheel and one wheel per gfx target (also: moshi-build --gpu-targets ...)."""
    targets_list = parse_gpu_targets(gpu_targets)
    targets.check_known_targets(targets_list)
    built_for = [] if wheel_set == "base" else targets_list
    chosen = select_application(recipes, app)
    report = pipeline.build(chosen, built_for, environment, fetch_options, jobs=jobs,
                            progress=fetch_options.progress, echo=click.echo)
    wheels = pipeline.make_wheels(chosen, report, built_for, environment, out_dir,
                                  build_number=build_number, envs_dir=fetch_options.cache.envs, echo=click.echo,
                                  wheels=wheel_set, cache=fetch_options.cache if wheel_cache else None)
    for w in wheels:
        click.echo(f"{w}  {w.stat().st_size / 1e6:.1f} MB  sha256 {sha256_file(w)}")
    if check_reproducible:
        pipeline.check_reproducible(chosen, report, built_for, environment, wheels, build_number=build_number,
                                    envs_dir=fetch_options.cache.envs, echo=click.echo, wheels=wheel_set)
    if size_report:
        for w in wheels:
            click.echo(sizes.format_report(sizes.read_sizes(w)))


def _one_target(ctx, param, value):
    """bench runs one target: a list is a usage error (exit 2), an unknown name a TargetError."""
    names = parse_gpu_targets(value)
    if len(names) != 1:
        raise click.BadParameter(
            f"one target only, got {len(names)} ({shorten(', '.join(names))}); run bench once per target")
    return names[0]


@cli.command("bench")
@click.option("--gpu-target", default="gfx1100", show_default=True, callback=_one_target,
              help="Which target's build and wheel to run (one).")
@click.option("--size", type=click.Choice(["real", "tiny"]), default="real", show_default=True,
              help="Random model with the real dimensions of tts-1.6b-en_fr, or the smallest moshi.cpp takes.")
@click.option("--device", default=None, help="ggml device, e.g. ROCm0 or CPU (default: ROCm0 if seen, else CPU).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the tools.")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An already built wheel of that target, its base wheel beside it (default: pack both from the build).")
@click.option("--app", default=None, help="Application recipe (default: moshi.cpp).")
@env_options
@source_options
def bench_cmd(gpu_target, size, device, threads, wheel, app, environment, recipes, fetch_options):
    """moshi-tts --bench from the build tree and from the installed wheel: frames/s and their ratio."""
    from builder.commands import bench

    result = bench.bench(select_application(recipes, app), gpu_target, environment, fetch_options,
                         fetch_options.cache.root, size=size, device=device, threads=threads, wheel=wheel,
                         echo=click.echo)
    click.echo("\n".join(result.lines()))


@cli.command("size-report")
@click.argument("wheels", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--top", type=click.IntRange(1), default=10, show_default=True, help="How many of the largest files.")
def size_report_cmd(wheels, top):
    """List what takes the room in built wheels (compressed and installed)."""
    for w in wheels:
        click.echo(sizes.format_report(sizes.read_sizes(w), top=top))


@cli.command("compare")
@click.argument("first", type=click.Path(exists=True, path_type=Path))
@click.argument("second", type=click.Path(exists=True, path_type=Path))
def compare_cmd(first, second):
    """Are two wheels (or two folders of wheels, by name) the same bytes? Names the first
    difference: a member, its metadata, or the offset inside it (and the ELF section)."""
    from builder.check import compare

    if first.is_dir() != second.is_dir():
        raise ConfigurationError(f"compare two wheels or two folders of wheels, not {first} and {second}")
    results = compare.compare_folders(first, second) if first.is_dir() else [compare.compare_wheels(first, second)]
    for r in results:
        click.echo(r.line())
    different = [r for r in results if not r.identical]
    if different:
        from builder.errors import NotReproducibleError

        raise NotReproducibleError(f"{len(different)} of {len(results)} wheel(s) differ; the first: "
                                   f"{different[0].a.name}")


@cli.command("verify")
@click.argument("wheels", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document (for CI) instead of lines.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MOSHI_BUILD_CACHE_DIR",
              help="The build's cache root: no file may mention it (default: the user's cache directory).")
@click.option("--build-path", "build_paths", multiple=True, type=click.Path(path_type=Path),
              help="Another directory of the build machine no file may mention (repeatable).")
@click.option("--base", "base", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The base wheel (moshi-rocm) to check target wheels with (default: the one of their "
                   "version beside them).")
def verify_cmd(wheels, as_json, cache_dir, build_paths, base):
    """Check built wheels without installing them (one line per check; exit 1 on any failure).

    A target wheel (moshi-rocm-<gfx>) is checked together with its base wheel moshi-rocm of the
    same version: the one beside it, or --base."""
    from builder.check import code_selection
    from builder.check import verify

    dirs = verify.default_build_paths(cache_dir) + list(build_paths)
    made: dict = {}

    def probe_root(needed, suite=None):
        # The wheel's comgr runs here if this machine's glibc loads it, else in the clean root
        # (a wheel with a glibc floor: in the clean root of the floor's suite).
        if (needed, suite) not in made:
            made[needed, suite] = code_selection.default_probe_root(needed, Cache(cache_dir).envs,
                                                                    lambda line: click.echo(line, err=True), suite)
        return made[needed, suite]
    reports, not_wheels = [], []
    for path in wheels:
        try:
            report = verify.verify_wheel(path, build_paths=dirs, probe_root=probe_root, base=base)
        except NotAWheelError as e:
            if not as_json:
                raise
            not_wheels.append(e)       # --json: the document still covers every argument
            reports.append(verify.not_a_wheel_entry(path, e))
            continue
        reports.append(report)
        if not as_json:
            for line in verify.report_lines(report):
                click.echo(line)
    if as_json:
        click.echo(verify.json_document(reports))
    if not_wheels:
        raise not_wheels[0] if len(not_wheels) == 1 else NotAWheelError(
            f"{len(not_wheels)} of {len(reports)} argument(s) are not wheels; the first: {not_wheels[0]}")
    if not all(r.ok for r in reports):
        sys.exit(1)  # click returns an Exit code instead of raising it when not standalone


@cli.command("install-check")
@click.argument("wheelhouse", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--gpu-target", default=None, help="Install moshi-rocm-<gfx> (with its base); default: the base alone.")
@click.option("--suite", "suites", multiple=True,
              help="Debian suite of a clean root (repeatable; default: every one of environments.toml [clean]).")
@click.option("--no-selftest", is_flag=True, help="Install and run ldd -r only.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MOSHI_BUILD_CACHE_DIR",
              help="Cache root holding the clean roots (default: the user's cache directory).")
def install_check_cmd(wheelhouse, gpu_target, suites, no_selftest, cache_dir):
    """Install the wheels by name into the clean root of each supported system and run every ELF
    file through ldd -r and `moshi-rocm selftest` on the CPU; one table row per root, exit 1 on
    any problem."""
    from builder.check import installed
    from builder.envs.base import load_config
    from builder.package import rules

    spec = rules.load_runtime_spec()
    distribution = installed.wheel_distribution(wheelhouse, gpu_target, spec.base_distribution)
    section = load_config()["clean"]
    chosen = list(suites) or list(section.get("suites") or [section["suite"]])
    results = installed.check_installed(wheelhouse, distribution, chosen, Cache(cache_dir).envs,
                                        echo=lambda l: click.echo(l, err=True), selftest=not no_selftest)
    click.echo(f"{distribution} from {wheelhouse}:")
    click.echo("| root | system | pip install by name | ELF files | ldd -r problems | selftest (CPU) |")
    click.echo("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        click.echo(r.row())
    for r in results:
        for line in r.ldd_problems[:10] + ([r.error] if r.error else []):
            click.echo(f"{r.suite}: {line}", err=True)
    if not all(r.ok for r in results):
        raise SystemExit(1)


def _targets_markdown(func):
    """`targets --markdown`: the README's GPU table from the data alone. It runs before
    env_options' wrapper, so no build environment is looked for, made or needed."""

    @click.option("--markdown", is_flag=True,
                  help="Print only the README's GPU table (Markdown): each target CI makes a wheel for and "
                       "the GPUs that run its code; from the data alone, no build environment needed.")
    @functools.wraps(func)
    def wrapper(*, markdown, rocm, **kwargs):
        if not markdown:
            return func(rocm=rocm, **kwargs)
        from builder.package.rules import load_runtime_spec
        from builder.publish.matrix import family_targets
        from builder.rocm import target_table

        kernels = set(get_stack(rocm).rocblas_targets)
        wheels = [t for family in target_table.WHEEL_FAMILIES for t in family_targets(family, kernel_targets=kernels)]
        click.echo(target_table.markdown(target_table.gpu_rows(
            wheels, distribution_for=load_runtime_spec().distribution_for)))

    return wrapper


@cli.command("targets")
@_targets_markdown
@env_cache_option
@env_options
def targets_cmd(environment):
    """List the gfx targets: example GPUs, and whether the environment can build them."""
    rows = targets_table(environment)
    label = {True: "yes", False: "no", None: "?"}
    stack = getattr(environment, "stack", None)
    if stack is not None:
        click.echo(f"ROCm stack {stack.name}: {stack.summary}")
    click.echo(f"{'target':<9} {'family':<8} {'compiler':<9} {'kernels':<8} example GPUs")
    for row in rows:
        click.echo(f"{row.target:<9} {row.family:<8} {label[row.compiler]:<9} {label[row.kernels]:<8} "
                   f"{', '.join(row.gpus)}")
    if not environment.exists():
        click.echo("(kernels: from the stack's data; compiler ? = unknown until the build environment exists: "
                   "moshi-build env create)")


@cli.command("matrix")
@click.option("--gpu-targets", default=None, metavar="LIST", help='gfx targets, e.g. "gfx1100;gfx1030".')
@click.option("--family", "families", multiple=True, metavar="NAME",
              help="A GPU family, e.g. rdna3 (repeatable, or \"rdna3;rdna2\"): its targets with code of their own.")
@click.option("--github-output", is_flag=True,
              help="Also append matrix=<json> to the file named by $GITHUB_OUTPUT.")
@rocm_option
def matrix_cmd(gpu_targets, families, github_output, rocm):
    """Print the GitHub Actions build matrix (JSON) for the given targets or families."""
    from builder.publish import matrix
    from builder.rocm import rocblas

    stack = get_stack(rocm)
    gh_matrix = matrix.github_matrix(matrix.resolve_targets(
        gpu_targets, families, kernel_targets=set(stack.rocblas_targets),
        rocblas_label=rocblas.stack_label(stack.name)))
    if github_output:
        matrix.write_github_output(gh_matrix)
    click.echo(matrix.to_json(gh_matrix))


@cli.command("index")
@click.argument("wheelhouse", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Site directory: OUT/index.html and the PEP 503 index in OUT/simple/.")
@click.option("--base-url", default=None, metavar="URL",
              help="Link files at URL/FILE instead of copying them into the index.")
def index_cmd(wheelhouse, out_dir, base_url):
    """Write a PEP 503 simple index of the wheels in WHEELHOUSE (for GitHub Pages)."""
    from builder.publish import simple_index

    simple, dists = simple_index.build_index(wheelhouse, out_dir, base_url)
    for d in dists:
        click.echo(f"{d.project} {d.version}: {d.filename}  sha256={d.sha256}")
    click.echo(f"index written to {simple}")


@cli.command("release-notes")
@click.argument("wheelhouse", type=click.Path(exists=True, path_type=Path))
def release_notes_cmd(wheelhouse):
    """Markdown release notes of the wheels in WHEELHOUSE: each wheel with its version, the
    components and the Debian packages with their versions (read from the wheels' JSON)."""
    from builder.publish import release_notes

    click.echo(release_notes.release_notes(wheelhouse), nl=False)


@cli.command("publish-check")
@click.argument("wheels", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--max-size", default="100MB", show_default=True, metavar="SIZE",
              help="Largest file the index takes (PyPI: 100 MB unless the project was granted more).")
@click.option("--twine/--no-twine", "twine", default=None,
              help="Require `twine check` / skip it (default: run it when twine is installed).")
def publish_check_cmd(wheels, max_size, twine):
    """Before an upload: every wheel within --max-size and passing `twine check` (one line per
    check; exit 1 if any wheel fails, before anything is uploaded)."""
    from builder.publish import checks

    limit = checks.parse_size(max_size)
    results = checks.check_wheels(list(wheels), limit, twine=twine)
    if twine is None and not checks.twine_available():
        click.echo("twine check: skipped, twine is not installed (--twine requires it)")
    for r in results:
        click.echo(r.line)
    failed = sorted({r.wheel for r in results if not r.ok})
    if failed:
        click.echo(f"publish-check: {len(failed)} of {len(wheels)} wheels cannot be published: "
                   f"{', '.join(failed)}; nothing was uploaded", err=True)
        sys.exit(1)
    click.echo(f"publish-check: {len(wheels)} wheels ready to publish")


@cli.group("env")
def env_group() -> None:
    """Create, inspect, enter or remove the build environment."""


@env_group.command("create")
@env_cache_option
@env_options
def env_create(environment):
    """Create the build environment (or check the host's ROCm)."""
    environment.ensure()
    for k, v in environment.info().items():
        click.echo(f"{k}: {v}")


@env_group.command("info")
@env_cache_option
@env_options
def env_info(environment):
    """Show what the build environment holds, and every Debian package installed in it with its version."""
    info = environment.info()
    for k, v in info.items():
        if k not in ("packages", "standins"):
            click.echo(f"{k}: {v}")
    for s in info.get("standins", []):
        click.echo(f"stand-in: {s['package']} {s['version']} ({s['soname']}, {len(s['symbols'])} functions "
                   f"returning {s['return_value']}) for {s['replaces']}, linked by {s['consumer']}")
    packages = environment.installed_packages() if hasattr(environment, "installed_packages") else {}
    if packages:
        click.echo(f"installed packages ({len(packages)}):")
        for name, version in sorted(packages.items()):
            click.echo(f"  {name} {version}")


@env_group.command("shell")
@env_cache_option
@env_options
def env_shell(environment):
    """Open an interactive shell inside the build environment."""
    import subprocess

    environment.ensure()
    cwd = Path.cwd()
    with environment.session([cwd]) as session:
        argv = session.wrap(["/bin/bash", "-i"], cwd, session.base_env())
        raise SystemExit(subprocess.call(argv))


@env_group.command("remove")
@env_cache_option
@env_options
def env_remove(environment):
    """Remove the build environment (the Debian root filesystem)."""
    environment.remove()
    click.echo("removed")


@env_group.command("floor-table")
@env_cache_option
@click.option("--write", is_flag=True, help="Replace the shipped table with the one just taken.")
def env_floor_table(env_cache_dir, write):
    """The glibc floor's symbol table (builder/resources/glibc-floor-<version>.json), taken again
    from the libc of the floor's Debian suite in its clean root; exit 1 if it differs from the
    shipped one (unless --write)."""
    import json

    from builder.package import glibc_floor, rules

    spec = rules.load_runtime_spec().glibc_floor
    if spec is None:
        raise ConfigurationError("runtime.toml has no [glibc_floor]")
    fresh = glibc_floor.table_of_suite(spec, Cache(env_cache_dir).envs, echo=lambda l: click.echo(l, err=True))
    target = Path(__file__).parent / "resources" / glibc_floor.table_resource(spec)
    shipped = json.loads(target.read_text()) if target.is_file() else {}
    differences = glibc_floor.table_differences(shipped, fresh)
    counts = ", ".join(f"{lib} {len(d['symbols'])}" for lib, d in fresh["libraries"].items())
    click.echo(f"glibc {spec.version} from {spec.suite} (libc6 {fresh['source']['libc6']}): {counts}")
    if write:
        write_atomic(target, json.dumps(fresh, indent=1, sort_keys=True) + "\n", doing="writing the floor table")
        click.echo(f"written: {target}")
    elif differences:
        click.echo("differs from the shipped table: " + "; ".join(differences) + " (--write replaces it)", err=True)
        raise SystemExit(1)
    else:
        click.echo(f"the shipped {target.name} matches")


@cli.group()
def recipes() -> None:
    """Inspect recipes."""


@recipes.command("check")
@source_options
def recipes_check(recipes, fetch_options):
    """Load and validate every recipe."""
    for r in recipes.values():
        steps = ", ".join(s.step + (" (per target)" if s.per_target else "") for s in r.build)
        click.echo(f"{r.name} {r.version} [{r.source.kind}] patches: {len(r.patches)}; steps: {steps}")


def _terminate(signum, frame):
    # SIGTERM (a CI cancel, `kill`) unwinds like Ctrl-C: mounts undone, staging removed.
    raise KeyboardInterrupt


def _fail(e: FatalError) -> None:
    click.secho(f"moshi-build: error: {shorten_runs(e.message)}", fg="red", err=True)
    sys.exit(e.return_code)


def main(argv: list[str] | None = None) -> None:
    """Run the command line. One rule for expected faults: a FatalError, an OSError of the
    file system (EACCES, EROFS, ENOSPC, EISDIR, ...) and a UnicodeDecodeError of an input
    end the run with one line and their exit code (docs/EXIT-CODES.md), never a traceback."""
    signal.signal(signal.SIGTERM, _terminate)
    argv = list(sys.argv[1:] if argv is None else argv)
    # `moshi-build --gpu-targets ...` with no subcommand runs the whole chain.
    if argv and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        argv.insert(0, "all")
    try:
        cli.main(args=argv, prog_name="moshi-build", standalone_mode=False)
    except FatalError as e:
        _fail(e)
    except (KeyboardInterrupt, click.exceptions.Abort):
        e = InterruptedByUser("interrupted; unfinished work was discarded (what a second Ctrl-C cut short is "
                              "removed by the next run) and the caches are consistent")
        click.secho(f"moshi-build: {e.message}", fg="red", err=True)
        sys.exit(e.return_code)
    except click.exceptions.ClickException as e:
        e.message = shorten_runs(e.message)
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except OSError as e:
        error = from_os_error(e)
        if error is None:
            raise
        _fail(error)
    except UnicodeDecodeError as e:
        _fail(ConfigurationError(f"an input is not UTF-8 text ({shorten(e)}); save it as UTF-8"))
