"""`moshi-build verify`'s elf-closure check: every library a file needs is where the loader looks.

  elf-closure  every DT_NEEDED resolves inside the wheel through the file's own $ORIGIN RPATH,
               or is on the allow-list of the wheel's manylinux policy (auditwheel's policy
               data); the libraries the runtime opens with dlopen() sit where their opener
               finds them (the [[dlopen]] rules of runtime.toml as the wheel's record kept
               them; the current runtime.toml's for older wheels). A base wheel's bin/ also
               holds every SONAME it "provides". A target wheel's DT_NEEDED resolve inside it
               or, through a RUNPATH entry naming the base's moshi_rocm/bin, to a SONAME the
               base provides.
"""

from __future__ import annotations

import fnmatch
import posixpath
from typing import Iterable, Mapping

from builder.check.context import Check, Context
from builder.check.elf_paths import found_in, origin_dirs
from builder.check.pair import BaseWheel
from builder.check.results import CheckResult, check_result, counted
from builder.common.wheel_reader import built_name
from builder.package import linkage
from builder.package.rules import DlopenRule, RuntimeSpec

NAME = "elf-closure"


def dlopen_rules(info: Mapping | None, spec: RuntimeSpec,
                 record: str = "_runtime.json") -> tuple[tuple[DlopenRule, ...], str | None]:
    """(the dlopen rules to check the wheel against, a problem with its record (named `record`) or None).

    The wheel's own _runtime.json records the [[dlopen]] rules of runtime.toml it
    was made with; a wheel made before it did falls back to this runtime.toml's.
    """
    recorded = info.get("dlopen") if isinstance(info, Mapping) else None
    if recorded is None:
        return spec.dlopen, None
    try:
        if not isinstance(recorded, list):
            raise ValueError(f"not a list: {recorded!r}")
        return tuple(DlopenRule.from_json(r) for r in recorded), None
    except ValueError as e:
        return spec.dlopen, f"{record}'s dlopen is unreadable ({e}); runtime.toml's rules were used"


def _whitelist(ctx: Context) -> frozenset[str]:
    return ctx.policy.whitelist if ctx.policy is not None else linkage.manylinux_whitelist()


def _left_to_the_system(needed: str, whitelist: frozenset[str]) -> bool:
    return needed in whitelist or needed.startswith("ld-linux") or needed in ("ld64.so.1", "ld64.so.2")


def _by_name(members: Iterable[str]) -> dict[str, list[str]]:
    """file name -> the members of that name."""
    by_name: dict[str, list[str]] = {}
    for member in members:
        by_name.setdefault(posixpath.basename(member), []).append(member)
    return by_name


def check_closure(ctx: Context) -> CheckResult:
    if ctx.kind == "target":
        return _closure_of_target(ctx)
    files, elf = ctx.contents.files, ctx.contents.elf
    whitelist = _whitelist(ctx)
    policy_name = ctx.policy.name if ctx.policy is not None else "every manylinux policy"
    by_name = _by_name(files)
    problems, resolved = [], 0
    for member, facts in sorted(elf.items()):
        dirs, _ = origin_dirs(member, facts.runpath)
        for needed in facts.needed:
            if _left_to_the_system(needed, whitelist):
                continue
            if found_in(dirs, needed, files):
                resolved += 1
                continue
            elsewhere = by_name.get(needed)
            if elsewhere:
                problems.append(f"{member} needs {needed}: it is at {elsewhere[0]}, which its RPATH "
                                f"({':'.join(facts.runpath) or 'none'}) does not search")
            else:
                problems.append(f"{member} needs {needed}: not in the wheel and not on the {policy_name} allow-list")
    opened = _dlopened(ctx, by_name, problems)
    provided = ""
    if ctx.kind == "base":
        bin_dir = f"{ctx.package}/{ctx.info.get('bin_dir', ctx.spec.bin_dir)}"
        provides = [p for p in ctx.info.get("provides") or () if isinstance(p, str)]
        for soname in provides:
            if f"{bin_dir}/{soname}" not in files:
                problems.append(f"{ctx.info_member} provides {soname} to target wheels, but {bin_dir}/ has no such file")
        provided = f"; {bin_dir}/ holds the {counted(len(provides), 'SONAME')} it provides"
    return check_result(NAME, problems,
                        f"{len(elf)} ELF files, {resolved} DT_NEEDED resolved inside the wheel, the rest on the "
                        f"{policy_name} allow-list; dlopen'd: {', '.join(opened) or 'none'}{provided}")


def _dlopened(ctx: Context, by_name: dict[str, list[str]], problems: list[str]) -> list[str]:
    """Libraries opened with dlopen() (invisible to DT_NEEDED) are where their opener looks;
    returns the ones found, notes the others in problems."""
    files, elf = ctx.contents.files, ctx.contents.elf
    rules, unreadable = dlopen_rules(ctx.info, ctx.spec)
    if unreadable:
        problems.append(unreadable)
    opened = []
    for rule in (r for r in rules if r.bundle):
        before = len(problems)
        if rule.needed_by:
            openers = [m for m in elf if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), rule.needed_by)]
            if not openers:
                continue  # what would open it is not shipped (the builder applies the rule the same way)
            for opener in openers:
                dirs, _ = origin_dirs(opener, elf[opener].runpath)
                if not found_in(dirs, rule.soname, files):
                    problems.append(f"{rule.soname} (opened with dlopen by {posixpath.basename(opener)}: "
                                    f"{rule.reason or 'runtime.toml'}) is not in its RPATH folders "
                                    f"({', '.join(d or '.' for d in dirs) or 'none'})")
        elif rule.soname not in by_name:
            problems.append(f"{rule.soname} (opened with dlopen: {rule.reason or 'runtime.toml'}) is not in the wheel")
        if len(problems) == before:
            opened.append(rule.soname)
    return opened


# --------------------------------------------------------------------------- a target wheel

def _resolve_in_pair(dirs: Iterable[str], name: str, files: Mapping[str, int], base: BaseWheel) -> str | None:
    """Where the loader finds `name` for a member of a target wheel searching `dirs` in order:
    "target" (in the target wheel), "base" (in the base wheel's bin/), or None."""
    for d in dirs:
        if d == base.bin_dir:
            if f"{d}/{name}" in base.contents.files:
                return "base"
        elif found_in([d], name, files):
            return "target"
    return None


def _closure_of_target(ctx: Context) -> CheckResult:
    """A target wheel's DT_NEEDED: inside it, or in the base wheel's bin/ and among the SONAMEs it provides."""
    files, elf, base = ctx.contents.files, ctx.contents.elf, ctx.base
    whitelist = _whitelist(ctx)
    policy_name = ctx.policy.name if ctx.policy is not None else "every manylinux policy"
    by_name = _by_name(files)
    base_by_name = _by_name(sorted(base.contents.files))
    provides, in_base = base.provides, f"the base wheel's {base.bin_dir}/"
    problems, resolved, shared = [], 0, {}
    for member, facts in sorted(elf.items()):
        dirs, _ = origin_dirs(member, facts.runpath)
        searched = ':'.join(facts.runpath) or 'none'
        for needed in facts.needed:
            if _left_to_the_system(needed, whitelist):
                continue
            where = _resolve_in_pair(dirs, needed, files, base)
            if where == "target":
                resolved += 1
            elif where == "base" and needed in provides:
                shared[needed] = shared.get(needed, 0) + 1
            elif where == "base" or needed not in provides and base_by_name.get(needed):
                at = f"{base.bin_dir}/{needed}" if where == "base" else base_by_name[needed][0]
                problems.append(f"{member} needs {needed}: the base wheel has it ({at}), but does not provide "
                                f"it (its _runtime.json provides {', '.join(sorted(provides)) or 'nothing'})")
            elif by_name.get(needed):
                problems.append(f"{member} needs {needed}: it is at {by_name[needed][0]}, which its RPATH "
                                f"({searched}) does not search")
            elif needed in provides and f"{base.bin_dir}/{needed}" in base.contents.files:
                problems.append(f"{member} needs {needed}: the base wheel provides it in {base.bin_dir}/, which its "
                                f"RPATH ({searched}) does not search")
            else:
                problems.append(f"{member} needs {needed}: not in the wheel, not provided by the base wheel "
                                f"{base.distribution} {base.version}, and not on the {policy_name} allow-list")
    opened = _dlopened_in_pair(ctx, problems)
    through = f" ({', '.join(sorted(shared))})" if shared else ""
    return check_result(NAME, problems,
                        f"{len(elf)} ELF files, {resolved} DT_NEEDED resolved inside the wheel, {sum(shared.values())} "
                        f"in {in_base}{through}, the rest on the {policy_name} allow-list; "
                        f"dlopen'd: {', '.join(opened) or 'none'}")


def _dlopened_in_pair(ctx: Context, problems: list[str]) -> list[str]:
    """Libraries opened with dlopen() by a library of the target wheel (the base's own openers are
    checked with the base): in the target wheel, or provided by the base."""
    files, elf, base = ctx.contents.files, ctx.contents.elf, ctx.base
    own = "dlopen" in ctx.info
    rules, unreadable = dlopen_rules(ctx.info if own else base.info, ctx.spec,
                                     "_target.json" if own else "the base wheel's _runtime.json")
    if unreadable:
        problems.append(unreadable)
    opened = []
    for rule in (r for r in rules if r.bundle and r.needed_by):
        before = len(problems)
        openers = [m for m in elf if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), rule.needed_by)]
        for opener in openers:
            dirs, _ = origin_dirs(opener, elf[opener].runpath)
            where = _resolve_in_pair(dirs, rule.soname, files, base)
            if where is None or where == "base" and rule.soname not in base.provides:
                problems.append(f"{rule.soname} (opened with dlopen by {posixpath.basename(opener)}: "
                                f"{rule.reason or 'runtime.toml'}) is not in its RPATH folders "
                                f"({', '.join(d or '.' for d in dirs) or 'none'})"
                                + (" among what the base wheel provides" if where == "base" else ""))
        if openers and len(problems) == before:
            opened.append(rule.soname)
    return opened


CHECK = Check(NAME, check_closure)
