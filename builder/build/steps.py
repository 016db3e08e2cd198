"""Run build steps: configure, compile, install into a staged prefix, cached by key.

A step's key covers everything that can change its output: the step's recipe
data, the source tree key (source pin and patches), the build environment's
identity, the gfx target, and the keys of the steps it depends on. A finished
step lives at builds/<step>[-<target>]-<key>/ and is reused as it is; an
unfinished one never appears under that name.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from builder.common.cache import Cache, disk_full_as_error, staging_dir
from builder.envs.base import EnvSession
from builder.common.process import failure, run_logged
from builder.common.files import file_lock
from builder.errors import BuildStepError, RecipeError
from builder.sources.recipe import BuildStep, topological_steps
from builder.sources.fetch import SourceTree

NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")


@dataclasses.dataclass(frozen=True)
class StepResult:
    step: str
    target: str | None
    key: str
    prefix: Path
    cached: bool
    seconds: float
    log: Path | None

    @property
    def label(self) -> str:
        return f"{self.step}[{self.target}]" if self.target else self.step


@dataclasses.dataclass
class BuildContext:
    cache: Cache
    session: EnvSession
    environment_id: str
    base_env: dict[str, str]
    jobs: int = os.cpu_count() or 1
    progress: bool = True
    # Tools the environment provides, e.g. {"cmake": "cmake", "make": "make"}.
    tools: dict[str, str] = dataclasses.field(default_factory=lambda: {"cmake": "cmake", "make": "make"})
    echo: Callable[[str], None] = print
    # Facts of the environment usable in recipes as {env:NAME}, e.g. {env:hip_clang_path}.
    variables: dict[str, str] = dataclasses.field(default_factory=dict)


# Where the cache appears in what the compilers write (__FILE__ in asserts, debug info)
# and where autotools steps are configured to live (configure lines get embedded, e.g.
# FFmpeg's avutil_configuration()): a fixed path, so no path of the build machine ends up
# in a wheel and the output does not depend on the cache's location.
# An environment with its own root (Debian) mounts the cache there and runs every step
# with that path (pipeline.build's aliases), so the compilers see the same paths whatever
# the cache's real one: nothing path-dependent gets in (string-table lengths, HIP's CUIDs,
# which hash the input file's path and the command line).
NEUTRAL_ROOT = "/moshi-build"
# Bump when the flags or the layout below change: every step key changes with it.
# 3: the cache is seen at NEUTRAL_ROOT inside the Debian root.
BUILD_RECIPE_VERSION = 3


def step_key(step: BuildStep, tree: SourceTree, environment_id: str, target: str | None,
             dep_keys: list[str]) -> str:
    definition = dataclasses.asdict(step)
    del definition["leaves_out"]  # what the guard checks: the build's own input is the option
    payload = json.dumps(
        {"step": definition, "tree": tree.key, "env": environment_id, "target": target, "deps": sorted(dep_keys),
         "builder": BUILD_RECIPE_VERSION},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_PLACEHOLDER = re.compile(r"\{([a-z_]+(?::[A-Za-z0-9._-]+)?)\}")


def expand(text: str, values: dict[str, str], where: str) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in values:
            raise RecipeError(
                f"{where}: unknown placeholder {{{name}}} in {text!r}; available: "
                + ", ".join("{" + k + "}" for k in sorted(values))
            )
        return values[name]

    return _PLACEHOLDER.sub(sub, text)


def path_map_flags(cache_root: Path) -> dict[str, str]:
    """Compiler flags (through the environment: CMake and configure scripts read them)
    that write NEUTRAL_ROOT instead of the cache's real path into objects."""
    flag = f"-ffile-prefix-map={os.path.abspath(cache_root)}={NEUTRAL_ROOT}"
    return {var: flag for var in ("CFLAGS", "CXXFLAGS", "HIPFLAGS")}


def neutral_prefix(cache_root: Path, prefix: Path) -> Path:
    """The install prefix an autotools step is configured with: prefix under NEUTRAL_ROOT."""
    return Path(NEUTRAL_ROOT) / Path(os.path.abspath(prefix)).relative_to(os.path.abspath(cache_root))


def _commands(step: BuildStep, source: Path, build: Path, prefix: Path, stage: Path,
              values: dict[str, str], ctx: BuildContext) -> list[tuple[str, list[str], dict[str, str]]]:
    opts = [expand(o, values, f"step {step.step}") for o in step.options]
    jobs = str(ctx.jobs)
    destdir = {"DESTDIR": str(stage)}
    if step.system == "cmake":
        cmake = ctx.tools["cmake"]
        cmds = [
            ("configure", [cmake, "-S", str(source), "-B", str(build), "-G", "Ninja",
                           f"-DCMAKE_INSTALL_PREFIX={prefix}", *opts], {}),
            ("build", [cmake, "--build", str(build), "--parallel", jobs,
                       *(a for t in step.build_targets for a in ("--target", t))], {}),
        ]
        if step.install == "rules":
            cmds.append(("install", [cmake, "--install", str(build)], destdir))
    else:
        make = ctx.tools["make"]
        cmds = [
            ("configure", [str(source / "configure"), f"--prefix={neutral_prefix(ctx.cache.root, prefix)}", *opts], {}),
            ("build", [make, f"-j{jobs}", *step.build_targets], {}),
        ]
        if step.install == "rules":
            cmds.append(("install", [make, "install"], destdir))
    return cmds


def _run_logged(label: str, phase: str, argv: list[str], cwd: Path, env: dict[str, str],
                log: Path, ctx: BuildContext) -> None:
    bar = tqdm(desc=f"{label} {phase}", unit="step", disable=not ctx.progress or None, leave=False)

    def progress(line: str) -> None:
        m = NINJA_PROGRESS.match(line)
        if m:
            bar.total, bar.n = int(m.group(2)), int(m.group(1))
            bar.refresh()
        else:
            bar.update(0)
    start = time.monotonic()
    try:
        code = run_logged(ctx.session.wrap(argv, cwd, env), log, cwd=cwd, shown=argv, on_line=progress, stop_timeout=20)
    finally:
        bar.close()
    with open(log, "a") as f:
        f.write(f"[{phase}: {time.monotonic() - start:.1f} s, exit {code}]\n")
    if code != 0:
        raise BuildStepError(f"{label}: " + failure(phase, code, log))


def _collect(step: BuildStep, build: Path, dest_prefix: Path) -> None:
    for rule in step.collect:
        matches = sorted(glob.glob(str(build / rule.from_glob)))
        if not matches:
            raise BuildStepError(
                f"{step.step}: collect rule {rule.from_glob!r} matched nothing in {build}; "
                "the upstream build layout changed: update the recipe"
            )
        into = dest_prefix / rule.into
        into.mkdir(parents=True, exist_ok=True)
        for m in matches:
            src = Path(m)
            if src.is_dir():
                shutil.copytree(src, into / src.name, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(src, into / src.name, follow_symlinks=False)


def _relocate_text_files(stage: Path, old: str, new: str) -> None:
    """pkg-config and libtool files name their prefix; point them at the real one."""
    for pattern in ("**/*.pc", "**/*.la"):
        for f in stage.glob(pattern):
            if f.is_file() and not f.is_symlink():
                text = f.read_text(errors="surrogateescape")
                if old in text:
                    f.write_text(text.replace(old, new), errors="surrogateescape")


def run_step(step: BuildStep, tree: SourceTree, target: str | None, deps: dict[str, StepResult],
             ctx: BuildContext) -> StepResult:
    key = step_key(step, tree, ctx.environment_id, target, [d.key for d in deps.values()])
    name = f"{step.step}-{target}" if target else step.step
    final = ctx.cache.builds / f"{name}-{key}"
    label = f"{step.step}[{target}]" if target else step.step
    if final.exists():
        return StepResult(step.step, target, key, final, cached=True, seconds=0.0, log=None)
    # One builder per step key: a second moshi-build (another shell, a CI job sharing the
    # cache) waits, then finds the step built, instead of sharing its build directory and log.
    with file_lock(ctx.cache.entry_lock(final), echo=ctx.echo,
                   waiting=f"{label}: another moshi-build is building it; waiting for it to finish"):
        if final.exists():  # built by the other moshi-build while we waited
            return StepResult(step.step, target, key, final, cached=True, seconds=0.0, log=None)
        return _build_step(step, tree, target, deps, ctx, key, name, final, label)


def _build_step(step: BuildStep, tree: SourceTree, target: str | None, deps: dict[str, StepResult],
                ctx: BuildContext, key: str, name: str, final: Path, label: str) -> StepResult:

    log = ctx.cache.logs / f"{name}-{key}.log"
    log.unlink(missing_ok=True)
    start = time.monotonic()
    work_root = ctx.cache.dir("work")
    with disk_full_as_error(ctx.cache.root), staging_dir(final) as stage:
        build = work_root / f"{name}-{key}"
        shutil.rmtree(build, ignore_errors=True)  # leftovers of an interrupted run
        build.mkdir(parents=True)
        values = {
            "source": str(tree.path), "build": str(build), "prefix": str(final),
            "jobs": str(ctx.jobs), "gpu_target": target or "",
            **{f"dep:{d}": str(r.prefix) for d, r in deps.items()},
            **{f"env:{k}": v for k, v in ctx.variables.items()},
        }
        if target is None:
            del values["gpu_target"]
        env = {**ctx.base_env, **path_map_flags(Path(ctx.session.inside(ctx.cache.root)))}
        env.update({k: expand(v, values, f"step {step.step}") for k, v in step.env})
        env.setdefault("NINJA_STATUS", "[%f/%t] ")
        for phase, argv, extra_env in _commands(step, tree.path, build, final, stage, values, ctx):
            _run_logged(label, phase, argv, build, {**env, **extra_env}, log, ctx)
        # DESTDIR installs land under stage/<configured prefix, as the step saw it>; lift them
        # to stage/. Text files name the prefix: the path later steps see it at.
        seen = Path(ctx.session.inside(final))
        configured = neutral_prefix(ctx.cache.root, final) if step.system == "autotools" else seen
        staged_prefix = stage / configured.relative_to(configured.anchor)
        if step.install == "rules" and not staged_prefix.is_dir():
            raise BuildStepError(f"{label}: the install step put nothing under {configured} (in {stage}); "
                                 f"see {log}")
        if staged_prefix.exists():
            for child in staged_prefix.iterdir():
                os.replace(child, stage / child.name)
            shutil.rmtree(stage / configured.relative_to(configured.anchor).parts[0])
            if configured != seen:
                _relocate_text_files(stage, str(configured), str(seen))
        if step.install == "collect":
            _collect(step, build, stage)
        (stage / ".moshi-build-step.json").write_text(json.dumps(
            {"step": step.step, "component": step.component, "target": target, "key": key,
             "source": tree.lock_entry()}, indent=2))
        if (build / ".ninja_log").is_file():  # each file's compile time, for a maintainer's look
            shutil.copyfile(build / ".ninja_log", log.with_suffix(".ninja_log"))
        shutil.rmtree(build, ignore_errors=True)
    return StepResult(step.step, target, key, final, cached=False,
                      seconds=time.monotonic() - start, log=log)


def build_all(steps: dict[str, BuildStep], trees: dict[str, SourceTree], targets: list[str],
              ctx: BuildContext) -> list[StepResult]:
    """Run every step in dependency order: shared steps once, per-target steps per target."""
    done: dict[tuple[str, str | None], StepResult] = {}
    results: list[StepResult] = []
    for step in topological_steps(steps):
        for target in (targets if step.per_target else [None]):
            deps = {}
            for d in step.depends:
                dep_step = steps[d]
                if dep_step.per_target and target is None:
                    raise RecipeError(
                        f"step {step.step!r} is built once but depends on the per-target step {d!r}"
                    )
                deps[d] = done[(d, target if dep_step.per_target else None)]
            result = run_step(step, trees[step.component], target, deps, ctx)
            done[(step.step, target)] = result
            results.append(result)
            state = "cached" if result.cached else f"built in {result.seconds:.0f} s"
            ctx.echo(f"{result.label}: {state} -> {result.prefix}")
    return results
