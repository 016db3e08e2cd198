"""Runs the native tools shipped in this package.

Each console script (moshi-tts, ...) ends in exec_tool(): the Python process
is replaced by the tool with os.execve, so arguments, stdin/stdout/stderr,
signals and the exit status are the tool's own. Only two things change on the
way: the environment gets what the bundled ROCm runtime needs (read from
_runtime.json, written when the wheel was built), and "-d HIP<N>" is accepted
as an alias of ggml's device name "ROCm<N>".

Two layouts (docs/WHEEL-PAIR.md in moshi-build):
  base wheel    _runtime.json has "kind": "base". The GPU code is in target
                wheels, installed beside this package as <package>_<gfx>/
                with a _target.json. The launcher picks one (select_target)
                and points ggml at its backend (GGML_BACKEND_PATH); with none,
                the tools run on the CPU.
  self-contained  no "kind" (wheels built before the split): the package has
                its own "gpu_target" and everything; no target wheel is looked for.

This file is part of the wheel template: keep it importable on Python 3.9.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

PACKAGE_DIR = Path(__file__).resolve().parent
RUNTIME_FILE = "_runtime.json"
TARGET_FILE = "_target.json"
TARGET_ENV = "MOSHI_ROCM_TARGET"        # gfx name: use this installed target wheel
BACKEND_ENV = "GGML_BACKEND_PATH"       # ggml loads this backend besides the CPU ones next to the tool
OVERRIDE_ENV = "HSA_OVERRIDE_GFX_VERSION"   # ROCm treats every GPU as this gfx version
NO_OVERRIDE_ENV = "MOSHI_ROCM_NO_OVERRIDE"  # "1": the launcher never sets OVERRIDE_ENV
DEFAULT_BACKEND = "libggml-hip.so"
_GFX = re.compile(r"gfx[0-9]+[0-9a-f]{2}")
# Python ignores these; an ignored signal stays ignored across exec, so the tool
# would see EPIPE instead of dying quietly when its reader goes away.
_RESET_SIGNALS = ("SIGPIPE", "SIGXFSZ")


class LauncherError(Exception):
    """The tool cannot be started (broken installation, unknown tool)."""


def runtime_info(package_dir: Path = PACKAGE_DIR) -> dict:
    path = Path(package_dir) / RUNTIME_FILE
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LauncherError(f"{path} is missing: the installation is incomplete; reinstall the wheel") from None
    except ValueError as e:
        raise LauncherError(f"{path} is not valid JSON ({e}); reinstall the wheel") from None


# --------------------------------------------------------------------------- target wheels

class TargetWheel(NamedTuple):
    """An installed target wheel: the folder <package>_<gfx>/ beside this package."""
    gpu_target: str
    folder: Path                # absolute
    info: dict                  # its _target.json ({} when unreadable)
    problem: Optional[str]      # why it cannot be used with this base (version, broken file); None if it can

    def backend(self) -> Path:
        """The ggml backend library (GGML_BACKEND_PATH takes one): "backend", relative to the folder;
        of a list, the HIP backend."""
        backend = self.info.get("backend") or DEFAULT_BACKEND
        if not isinstance(backend, str):
            names = [str(b) for b in backend] or [DEFAULT_BACKEND]
            backend = next((b for b in names if b.startswith("libggml-hip")), names[0])
        return self.folder / backend


class Selection(NamedTuple):
    """Which target wheel the tools use (None: the CPU only), why, and the wheels ignored on the way."""
    target: Optional[TargetWheel]
    reason: str
    warnings: List[str]


def is_base(info: Mapping) -> bool:
    """A base wheel's _runtime.json (its GPU code is in target wheels); False for a self-contained wheel."""
    return info.get("kind") == "base"


def target_distribution(info: Mapping, gpu_target: str) -> str:
    """The distribution holding `gpu_target`'s code: moshi-rocm-gfx1100."""
    pattern = info.get("target_distribution") or info.get("distribution_pattern") or "moshi-rocm-{gpu_target}"
    return pattern.replace("{gpu_target}", gpu_target)


def target_package(info: Mapping, gpu_target: str) -> str:
    """The folder a target wheel installs beside this package: moshi_rocm_gfx1100."""
    pattern = info.get("target_package") or info.get("package", "moshi_rocm") + "_{gpu_target}"
    return pattern.replace("{gpu_target}", gpu_target)


def installed_targets(info: Mapping, package_dir: Path = PACKAGE_DIR) -> List[TargetWheel]:
    """Every target wheel installed beside the package (usable or not), by gfx name.

    Only a base wheel has any: a self-contained wheel's list is empty."""
    if not is_base(info):
        return []
    site = Path(package_dir).resolve().parent
    prefix, _, suffix = target_package(info, "{gpu_target}").partition("{gpu_target}")
    found = []
    for path in sorted(site.glob(prefix + "gfx*" + suffix + "/" + TARGET_FILE)):
        folder = path.parent
        name = folder.name[len(prefix):len(folder.name) - len(suffix)]
        problem = None
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            data = {}
            problem = "%s cannot be read (%s): reinstall %s" % (path, e, target_distribution(info, name))
        if problem is None:
            name = data.get("gpu_target") or name
            if data.get("kind", "target") != "target":
                problem = "%s is not a target wheel's file (kind %r)" % (path, data.get("kind"))
            elif data.get("version") != info.get("version"):
                problem = ("%s %s does not match %s %s: pip install %s==%s"
                           % (data.get("distribution") or target_distribution(info, name), data.get("version"),
                              info.get("distribution", "moshi-rocm"), info.get("version"),
                              target_distribution(info, name), info.get("version")))
        target = TargetWheel(name, folder, data, problem)
        if problem is None and not target.backend().is_file():
            target = target._replace(problem="%s is missing: reinstall %s" % (
                target.backend(), data.get("distribution") or target_distribution(info, name)))
        found.append(target)
    return found


def _override_target(environ: Mapping[str, str]) -> Optional[str]:
    value = environ.get("HSA_OVERRIDE_GFX_VERSION")
    if not value:
        return None
    from .kfd import override_target
    return override_target(value)


def machine_gpus(environ: Mapping[str, str]) -> list:
    """The GPUs of the KFD topology, as `moshi-rocm doctor` reads them (MOSHI_ROCM_SYSFS/_DEV honoured)."""
    from . import kfd
    gpus, _ = kfd.read_gpus(environ.get(kfd.SYSFS_ENV) or "/sys", environ.get(kfd.DEV_ENV) or "/dev")
    return gpus


def _pick(pool: Sequence[TargetWheel], info: Mapping, environ: Mapping[str, str],
          gpus: Callable[[], list]) -> Tuple[Optional[TargetWheel], str]:
    if not pool:
        return None, "no target wheel is installed"
    if len(pool) == 1:
        return pool[0], "the only target wheel installed"
    by_name = {t.gpu_target: t for t in pool}
    table = info.get("targets") or {}
    forced = _override_target(environ)
    machine = gpus()
    for g in machine:
        if g.target is None:
            continue
        if forced:
            wanted = [(forced, "GPU %d (%s) runs as %s with HSA_OVERRIDE_GFX_VERSION=%s"
                       % (g.index, g.target, forced, environ.get("HSA_OVERRIDE_GFX_VERSION")))]
        else:
            wanted = [(g.target, "GPU %d is a %s" % (g.index, g.target))]
            runs_as = (table.get(g.target) or {}).get("runs_as")
            if runs_as:
                wanted.append((runs_as, "GPU %d (%s) runs %s code" % (g.index, g.target, runs_as)))
        for name, why in wanted:
            if name in by_name:
                return by_name[name], why
    names = ", ".join(sorted(by_name))
    if not machine:
        return None, "no AMD GPU found to choose among the target wheels installed (%s)" % names
    return None, ("no GPU of this machine (%s) runs the target wheels installed (%s)"
                  % (", ".join(g.target or "unknown" for g in machine), names))


def select_target(info: Mapping, environ: Mapping[str, str], package_dir: Path = PACKAGE_DIR,
                  gpus: Optional[list] = None) -> Selection:
    """The target wheel the tools use.

    1. MOSHI_ROCM_TARGET=gfx...: that one; LauncherError when it is not installed (or does not match).
    2. else the only target wheel installed;
    3. else the one of the first GPU (KFD topology) whose gfx target, or the target it runs as with
       HSA_OVERRIDE_GFX_VERSION (the target table's runs_as), has a wheel installed; when
       HSA_OVERRIDE_GFX_VERSION is set, every GPU counts as the target it names;
    4. else none: the tools run on the CPU.
    A wheel that cannot be used (another version, an unreadable _target.json) is skipped, with a
    warning only if it would have been chosen. `gpus` (kfd.Gpu list) saves reading the machine again.
    """
    if not is_base(info):
        return Selection(None, "a self-contained wheel", [])
    found = installed_targets(info, package_dir)
    requested = (environ.get(TARGET_ENV) or "").strip().lower()
    if requested:
        if not _GFX.fullmatch(requested):
            raise LauncherError("%s=%s is not a gfx target name (like gfx1100)" % (TARGET_ENV, environ[TARGET_ENV]))
        match = [t for t in found if t.gpu_target == requested]
        if not match:
            others = ", ".join(t.gpu_target for t in found) or "none"
            raise LauncherError("%s=%s, but %s is not installed (target wheels installed: %s): pip install %s"
                                % (TARGET_ENV, requested, target_distribution(info, requested), others,
                                   target_distribution(info, requested)))
        if match[0].problem:
            raise LauncherError("%s=%s, but %s" % (TARGET_ENV, requested, match[0].problem))
        return Selection(match[0], "%s=%s" % (TARGET_ENV, requested), [])
    read: List[list] = []

    def machine() -> list:
        if not read:
            read.append(machine_gpus(environ) if gpus is None else list(gpus))
        return read[0]

    pool = list(found)
    warnings: List[str] = []
    while True:
        chosen, reason = _pick(pool, info, environ, machine)
        if chosen is None or chosen.problem is None:
            return Selection(chosen, reason, warnings)
        warnings.append("ignoring %s: %s" % (chosen.folder, chosen.problem))
        pool.remove(chosen)


def describe_selection(info: Mapping, selection: Selection) -> str:
    """What the tools run, e.g. "gfx1100 code (moshi-rocm-gfx1100 1.0: the only target wheel installed)"
    or "on the CPU only (no target wheel is installed)"."""
    t = selection.target
    if t is None:
        return "on the CPU only (%s)" % selection.reason
    return "%s code (%s %s: %s)" % (t.gpu_target, t.info.get("distribution") or target_distribution(info, t.gpu_target),
                                   t.info.get("version", "?"), selection.reason)


def code_summary(info: Mapping, environ: Optional[Mapping[str, str]] = None,
                 package_dir: Path = PACKAGE_DIR) -> str:
    """For a heading: "for gfx1100" (a self-contained wheel), "with gfx1100 code (moshi-rocm-gfx1100 ...)"
    or "on the CPU only (...)" (a base wheel). LauncherError as select_target()."""
    if not is_base(info):
        return "for %s" % info.get("gpu_target", "?")
    selection = select_target(info, os.environ if environ is None else environ, package_dir)
    return ("with " if selection.target else "") + describe_selection(info, selection)


def _warn(message: str) -> None:
    print("moshi-rocm: warning: %s" % message, file=sys.stderr)


def _note(message: str) -> None:
    print("moshi-rocm: %s" % message, file=sys.stderr)


class Override(NamedTuple):
    value: Optional[str]        # the HSA_OVERRIDE_GFX_VERSION the launcher sets; None: none
    message: str                # one line for stderr ("" when there is nothing to say)


def automatic_override(info: Mapping, target: Optional[str], environ: Mapping[str, str], gpus: Sequence) -> Override:
    """The HSA_OVERRIDE_GFX_VERSION the tools get when the chosen target wheel's code runs on this
    machine's GPU only as another target (the table's runs_as: a Radeon 780M, gfx1103, runs the
    gfx1100 wheel's code as "11.0.0").

    One value holds for the whole process (ROCm applies it to every GPU), so the rule is:
      - nothing when the user set HSA_OVERRIDE_GFX_VERSION (it is theirs), MOSHI_ROCM_NO_OVERRIDE=1,
        no target wheel is used, or no GPU needs it (each is the target itself);
      - the target's version when some GPU runs the target through runs_as and every GPU of known
        target either is the target or runs it (780M alone; 780M + RX 7900 XTX: both run gfx1100);
      - nothing, said in one line, when another GPU is of another family (780M + RX 6700 XT with
        the gfx1100 wheel): the override would make that GPU load code it cannot run."""
    if not target or environ.get(OVERRIDE_ENV):
        return Override(None, "")
    table = info.get("targets") or {}
    needing, others, version = [], [], None
    for g in gpus:
        if g.target is None or g.target == target:
            continue
        entry = table.get(g.target) or {}
        value = entry.get("hsa_override_gfx_version")
        if entry.get("runs_as") == target and isinstance(value, str) and _version_names(value) == target:
            needing.append(g)
            version = value
        else:
            others.append(g)
    if not needing:
        return Override(None, "")
    first = needing[0]
    if environ.get(NO_OVERRIDE_ENV) == "1":
        return Override(None, "%s=1: not setting %s=%s, so GPU %d (%s) cannot run the %s code"
                        % (NO_OVERRIDE_ENV, OVERRIDE_ENV, version, first.index, first.target, target))
    if others:
        other = others[0]
        return Override(None, "not setting %s=%s for GPU %d (%s): GPU %d (%s) would then load %s code it cannot "
                              "run; to use GPU %d, run with ROCR_VISIBLE_DEVICES=%d %s=%s"
                        % (OVERRIDE_ENV, version, first.index, first.target, other.index, other.target, target,
                           first.index, first.index, OVERRIDE_ENV, version))
    return Override(version, "%s=%s: GPU %d (%s) runs the %s wheel's code (%s=1 turns this off)"
                    % (OVERRIDE_ENV, version, first.index, first.target, target, NO_OVERRIDE_ENV))


def _version_names(value: str) -> Optional[str]:
    from .kfd import override_target
    return override_target(value)


def alias_device(name: str, aliases: Iterable[Sequence[str]]) -> str:
    """HIP0 -> ROCm0 (case-insensitive prefix, index kept); anything else unchanged."""
    for alias, real in aliases:
        m = re.fullmatch(re.escape(alias) + r"([0-9]+)", name, flags=re.IGNORECASE)
        if m:
            return real + m.group(1)
    return name


def rewrite_device_args(args: Sequence[str], flags: Iterable[str] = ("-d", "--device"),
                        aliases: Iterable[Sequence[str]] = (("HIP", "ROCm"),)) -> List[str]:
    """Rewrite the value after a device flag the way the tools read it (flag, then value)."""
    flags = tuple(flags)
    aliases = tuple(tuple(a) for a in aliases)
    out: List[str] = []
    i = 0
    while i < len(args):
        out.append(args[i])
        if args[i] in flags and i + 1 < len(args):
            out.append(alias_device(args[i + 1], aliases))
            i += 2
            continue
        i += 1
    return out


def tool_environment(info: Mapping, base_env: Mapping[str, str], package_dir: Path = PACKAGE_DIR,
                     selection: Optional[Selection] = None,
                     warn: Callable[[str], None] = _warn, note: Callable[[str], None] = _note) -> Dict[str, str]:
    """The environment the tool runs with.

    Variables listed under "env" point at folders of the package (e.g.
    ROCBLAS_TENSILE_LIBPATH -> the bundled rocBLAS kernels) and always win: a
    value meant for another ROCm installation would not match the bundled
    rocBLAS. LD_LIBRARY_PATH is left alone when unset (RUNPATHs find
    everything); when set, the package's library folders go first, so a
    system ROCm listed there cannot replace a bundled library.

    A base wheel adds the target wheel select_target() picks (with `base_env`; or
    `selection` as given): GGML_BACKEND_PATH is its backend library, its "env"
    entries are folders inside it, its "library_dirs" follow the package's in
    LD_LIBRARY_PATH. With no target wheel, GGML_BACKEND_PATH is not set by us. When the
    chosen wheel's code runs on the machine's GPU only as another target, HSA_OVERRIDE_GFX_VERSION
    is set too, said in one line on stderr (automatic_override() has the rule).
    """
    env = dict(base_env)
    if not env.get("MODEL_CACHE"):   # the one model folder `moshi-rocm models download` fills
        from .models import model_folder
        env["MODEL_CACHE"] = str(model_folder(base_env))
    for var, rel in info.get("env", {}).items():
        env[var] = str(Path(package_dir) / rel)
    ours = [os.path.normpath(str(Path(package_dir) / d)) for d in info.get("library_dirs", [])]
    if is_base(info):
        if selection is None:
            selection = select_target(info, base_env, package_dir)
        for message in selection.warnings:
            warn(message)
        target = selection.target
        if target is not None:
            override = automatic_override(info, target.gpu_target, base_env, machine_gpus(base_env))
            if override.value:
                env[OVERRIDE_ENV] = override.value
            if override.message:
                note(override.message)
            env[BACKEND_ENV] = str(target.backend())
            for var, rel in target.info.get("env", {}).items():
                env[var] = str(target.folder / rel)
            ours += [os.path.normpath(str(target.folder / d)) for d in target.info.get("library_dirs", [])]
    current = env.get("LD_LIBRARY_PATH", "")
    if current:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(ours + [current])
    return env


def tool_path(tool: str, info: Mapping, package_dir: Path = PACKAGE_DIR) -> Path:
    if tool not in info.get("tools", []):
        known = ", ".join(info.get("tools", [])) or "none"
        raise LauncherError(f"unknown tool {tool!r}; this package has: {known}")
    exe = Path(package_dir) / info["bin_dir"] / tool
    if not os.access(str(exe), os.X_OK):
        raise LauncherError(f"{exe} is missing or not executable: the installation is broken; reinstall the wheel")
    return exe


def prepare(tool: str, args: Sequence[str], base_env: Optional[Mapping[str, str]] = None,
            package_dir: Path = PACKAGE_DIR) -> Tuple[Path, List[str], Dict[str, str]]:
    """(executable, argv, env) for running `tool` with `args`: what exec_tool() passes to execve."""
    info = runtime_info(package_dir)
    exe = tool_path(tool, info, package_dir)
    launcher = info.get("launcher", {})
    argv = [str(exe)] + rewrite_device_args(
        list(args), launcher.get("device_flags", ()), launcher.get("device_aliases", ()))
    env = tool_environment(info, os.environ if base_env is None else base_env, package_dir)
    return exe, argv, env


def exec_tool(tool: str, args: Sequence[str], package_dir: Path = PACKAGE_DIR) -> "NoReturn":  # type: ignore[name-defined]
    """Replace this process with the tool. argv[0] is the tool's real path:
    the tools find their *-config.json files next to argv[0]."""
    exe, argv, env = prepare(tool, args, package_dir=package_dir)
    from . import models
    hint = models.missing_default(tool, args, env, package_dir)
    if hint:   # said, not enforced: the tools also find models elsewhere (kyutai/ folders, -r in a config)
        _note(hint)
    for name in _RESET_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    os.execve(str(exe), argv, env)
    raise AssertionError("os.execve returned")  # pragma: no cover


def console_entry(tool: str) -> Callable[[], int]:
    """The callable a console script runs: exec the tool, or explain why not."""

    def run() -> int:
        try:
            exec_tool(tool, sys.argv[1:])
        except LauncherError as e:
            print(f"{tool}: {e}", file=sys.stderr)
            return 127
        except OSError as e:
            print(f"{tool}: cannot run {e.filename or tool}: {e.strerror}", file=sys.stderr)
            return 126
        return 0  # pragma: no cover (exec does not return)

    run.__name__ = run.__qualname__ = tool
    return run
