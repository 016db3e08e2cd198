"""`moshi-build verify`'s rpath check: every RPATH/RUNPATH stays in the wheel.

  rpath  every entry is $ORIGIN-relative and names a folder of the wheel; a target wheel's
         entries name its own folders (<folder>/, <folder>.libs/) or the base wheel's bin/
"""

from __future__ import annotations

from builder.check.context import Check, Context
from builder.check.elf_paths import origin_dirs
from builder.check.results import CheckResult, check_result

NAME = "rpath"


def check_rpath(ctx: Context) -> CheckResult:
    if ctx.kind == "target":
        return _rpath_of_target(ctx)
    problems = []
    for member, facts in sorted(ctx.contents.elf.items()):
        _, bad = origin_dirs(member, facts.runpath)
        if bad:
            problems.append(f"{member}: RPATH entries not relative to $ORIGIN inside the wheel: {':'.join(bad)}")
    return check_result(NAME, problems, f"every RPATH/RUNPATH of {len(ctx.contents.elf)} ELF files is $ORIGIN-relative")


def _rpath_of_target(ctx: Context) -> CheckResult:
    """$ORIGIN-relative entries naming the target wheel's own folders, or the base wheel's bin/."""
    folder, base_bin = ctx.package, ctx.base.bin_dir
    own = (folder, f"{folder}.libs")
    problems, to_base = [], 0
    for member, facts in sorted(ctx.contents.elf.items()):
        bad, elsewhere = [], []
        for entry in facts.runpath:
            dirs, wrong = origin_dirs(member, [entry])
            if wrong:
                bad.append(entry)
            elif dirs[0] == base_bin:
                to_base += 1
            elif dirs[0].split("/", 1)[0] not in own:
                elsewhere.append(f"{entry} ({dirs[0] or '.'})")
        if bad:
            problems.append(f"{member}: RPATH entries not relative to $ORIGIN inside the wheel: {':'.join(bad)}")
        if elsewhere:
            problems.append(f"{member}: RPATH entries outside {folder}/, {folder}.libs/ and the base wheel's "
                            f"{base_bin}/: {', '.join(elsewhere)}")
    return check_result(NAME, problems, f"every RPATH/RUNPATH of {len(ctx.contents.elf)} ELF files is "
                                        f"$ORIGIN-relative, in the wheel or the base wheel's {base_bin}/ "
                                        f"({to_base} naming the base)")


CHECK = Check(NAME, check_rpath)
