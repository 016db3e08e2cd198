"""`moshi-build verify`'s backends check: the ggml backends the tools load are in the wheel.

  backends  self-contained and base: <package>/bin/ holds the backends verify.toml requires
            (ggml finds them by scanning the tool's folder: no DT_NEEDED shows they are
            missing); a base wheel holds no GPU backend (it comes with the target wheels)
            target: the backend _target.json names (the launcher points GGML_BACKEND_PATH at
            it) is an ELF library in the wheel
"""

from __future__ import annotations

import fnmatch
import posixpath

from builder.check.context import Check, Context
from builder.check.results import CheckResult, check_result

NAME = "backends"


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
    return check_result(NAME, problems, f"{bin_dir}: " + ", ".join(found) + gpu)


def _backend_of_target(ctx: Context) -> CheckResult:
    """The backend _target.json names (the launcher points GGML_BACKEND_PATH at it) is in the wheel."""
    folder, named = ctx.package, ctx.info.get("backend")
    backends = [named] if isinstance(named, str) else named
    if not backends or not isinstance(backends, list) or not all(isinstance(b, str) and b for b in backends):
        return check_result(NAME, [f"{ctx.info_member} names no backend ({named!r}); the launcher would load "
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
    return check_result(NAME, problems, f"{', '.join(found)}: the GPU backend the launcher loads (GGML_BACKEND_PATH)")


CHECK = Check(NAME, check_backends)
