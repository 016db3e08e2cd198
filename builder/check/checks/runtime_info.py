"""`moshi-build verify`'s runtime-info check: the wheel's record names this wheel.

  runtime-info  self-contained: <package>/_runtime.json names the wheel's distribution and a
                gfx target, and the file is named for that distribution
                base: _runtime.json names the wheel and its version, no gfx target, the
                SONAMEs it provides to target wheels and the target wheels' name pattern
                target: _target.json names the wheel, its version and a gfx target, the base
                wheel it was checked with, and pins that base's version (and so does
                METADATA); it holds nothing outside its own folders, and every path of its
                "env" is in it
"""

from __future__ import annotations

import email.parser
import posixpath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from builder.check.context import Check, Context
from builder.check.names import folder_of, same_version
from builder.check.results import CheckResult, check_result, counted
from builder.rocm import gfx

NAME = "runtime-info"


def check_runtime_info(ctx: Context) -> CheckResult:
    if ctx.kind == "base":
        return _runtime_info_of_base(ctx)
    if ctx.kind == "target":
        return _runtime_info_of_target(ctx)
    problems = []
    name = ctx.contents.report.path.name
    if ctx.info is None:
        problems.append(f"no readable <package>/_runtime.json in {name}: not a moshi-build wheel, or a broken one")
        return check_result(NAME, problems, "")
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
    return check_result(NAME, problems, f"{ctx.info.get('distribution')} {ctx.info.get('version')} "
                                        f"for {target}")


def _names_this_wheel(ctx: Context, distribution, problems: list[str]) -> None:
    """The runtime file names the wheel's distribution and version, and sits in its folder."""
    wheel_name, wheel_version = parse_wheel_filename(ctx.contents.report.path.name)[:2]
    if not isinstance(distribution, str) or canonicalize_name(distribution) != wheel_name:
        problems.append(f"{ctx.info_member} names {distribution!r}, but the file is named for {wheel_name}")
    elif ctx.info_member.split("/", 1)[0] != folder_of(distribution):
        problems.append(f"{ctx.info_member} is not in {folder_of(distribution)}/, the folder of {distribution}")
    if not same_version(ctx.info.get("version"), wheel_version):
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
    return check_result(NAME, problems, f"{info.get('distribution')} {info.get('version')}: the base wheel, "
                                        f"providing {counted(count, 'SONAME')} to {pattern} wheels")


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
    _pins_the_base(ctx, problems)
    _stays_in_its_folders(ctx, problems)
    return check_result(NAME, problems, f"{distribution} {info.get('version')} for {target}, with "
                                        f"{base.distribution} {base.version}")


def _pins_the_base(ctx: Context, problems: list[str]) -> None:
    """_target.json and METADATA require exactly the base wheel's version."""
    info, base = ctx.info, ctx.base
    pin = f"{base.distribution}=={info.get('version')}"
    if not _pins(info.get("requires"), base.distribution, info.get("version")):
        problems.append(f"{ctx.info_member} requires {info.get('requires')!r}, not {pin}")
    metadata = next((m for m in sorted(ctx.contents.texts) if m.endswith(".dist-info/METADATA")), None)
    if metadata is not None:
        message = email.parser.Parser().parsestr(ctx.contents.texts[metadata], headersonly=True)
        requires = message.get_all("Requires-Dist") or []
        if not any(_pins(r, base.distribution, info.get("version")) for r in requires):
            problems.append(f"METADATA does not require {pin} (Requires-Dist: {', '.join(requires) or 'none'})")


def _stays_in_its_folders(ctx: Context, problems: list[str]) -> None:
    """Nothing outside <folder>/ and <folder>.libs/ (pip would overwrite another wheel's files), and
    every path _target.json's env names is in the wheel."""
    folder = ctx.package
    own = (f"{folder}/", f"{folder}.libs/")
    strays = sorted(m for m in ctx.contents.files if not m.startswith(own) and ".dist-info/" not in m)
    if strays:
        problems.append(f"{counted(len(strays), 'file')} outside {folder}/ and {folder}.libs/ (they would overwrite "
                        f"the base wheel's or another target's), e.g. {strays[0]}")
    env = ctx.info.get("env") or {}
    for variable, relative in sorted(env.items() if isinstance(env, dict) else ()):
        where = posixpath.normpath(f"{folder}/{relative}")
        if where not in ctx.contents.files and not any(m.startswith(where + "/") for m in ctx.contents.files):
            problems.append(f"{ctx.info_member} sets {variable} to {relative}, but {where} is not in the wheel")


def _pins(requirement, distribution: str, version) -> bool:
    """`requirement` (a string: "moshi-rocm==1.0") asks for exactly `version` of `distribution`."""
    try:
        req = Requirement(str(requirement))
    except InvalidRequirement:
        return False
    specs = list(req.specifier)
    return (canonicalize_name(req.name) == canonicalize_name(distribution) and len(specs) == 1
            and specs[0].operator in ("==", "===") and same_version(specs[0].version, version))


CHECK = Check(NAME, check_runtime_info)
