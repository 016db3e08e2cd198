"""`moshi-build verify`'s manylinux check: the platform tag fits what the wheel needs of the system.

  manylinux  the tag's policy (auditwheel's data) provides the newest GLIBC/GLIBCXX/CXXABI/GCC
             symbol versions the wheel needs from the system, and it is the tag auditwheel
             would give: the most compatible policy with those versions that lets the system
             provide every library the wheel does not carry. Only what the system provides
             counts: a library the wheel carries (or a target wheel's base provides) brings
             its own versions. A wheel with a glibc floor names its tag itself (the glibc-floor
             check proves it), so a lower fitting tag is no problem here.
"""

from __future__ import annotations

import posixpath

from builder.check.context import Check, Context
from builder.check.policies import highest_versions, policies_of, version_key
from builder.check.results import CheckResult, check_result

NAME = "manylinux"


def check_manylinux(ctx: Context) -> CheckResult:
    platforms = ctx.contents.report.platform_tags
    carried = {posixpath.basename(m) for m in ctx.contents.files}
    if ctx.base is not None:   # what the base wheel provides is not left to the system
        carried |= ctx.base.provides
    # Only what the system must provide counts: a library the wheel carries (libstdc++-moshi
    # under a glibc floor) brings its own versions.
    versions: dict[str, set[str]] = {}
    for d in ctx.contents.details.values():
        for library, vs in d.versions.items():
            if library not in carried:
                versions.setdefault(library, set()).update(vs)
    all_versions = {v for vs in versions.values() for v in vs}
    highest = highest_versions(all_versions)
    policy = ctx.policy
    if policy is None:
        return check_result(NAME, [f"no manylinux platform tag ({', '.join(platforms) or 'none'})"], "")
    shown = ", ".join(highest[p] for p in ("GLIBC", "GLIBCXX", "CXXABI", "GCC") if p in highest) or "none"
    problems = []
    for prefix, allowed in policy.symbol_versions.items():
        too_new = sorted((v for v in all_versions if v.partition("_")[0] == prefix
                          and v.partition("_")[2] not in allowed), key=version_key)
        if too_new:
            users = sorted({lib for lib, vs in versions.items() if too_new[-1] in vs})
            problems.append(f"{policy.name} does not provide {', '.join(too_new)} (needed from {', '.join(users)})")
    expected = _tag_auditwheel_would_give(ctx, policy, carried, all_versions)
    # A glibc floor names its tag itself (no lower one: only the floor is proven, by glibc-floor)
    floored = isinstance(ctx.info, dict) and isinstance(ctx.info.get("glibc_floor"), dict)
    if not floored and not problems and expected is not None and expected.name != policy.name:
        problems.append(f"tagged {policy.name}, but the newest symbol versions ({shown}) and the system "
                        f"libraries it needs fit {expected.name}")
    return check_result(NAME, problems, f"{policy.name} matches the newest symbol versions needed from the "
                                        f"system: {shown}")


def _tag_auditwheel_would_give(ctx: Context, policy, carried: set[str], all_versions: set[str]):
    """The most compatible policy that has every symbol version and lets the system provide
    every library the wheel does not carry (None: no manylinux policy does)."""
    arch = policy.name.split("_", 3)[-1]
    external = {n for f in ctx.contents.elf.values() for n in f.needed
                if n not in carried and not n.startswith("ld-linux")}
    for p in sorted(policies_of(arch), key=lambda p: -p.priority):
        if p.name.startswith("linux"):
            continue
        ok_versions = all(v.partition("_")[2] in p.symbol_versions[v.partition("_")[0]]
                          for v in all_versions if v.partition("_")[0] in p.symbol_versions)
        if ok_versions and external <= p.whitelist:
            return p
    return None


CHECK = Check(NAME, check_manylinux)
