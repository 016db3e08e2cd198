"""`moshi-build verify`'s standins check: generated stand-in libraries stay out of reach.

  standins  each stand-in the wheel's record lists (stacks.toml, runtime.toml [[standin]]) is
            in the wheel and defines every symbol it declares; only its consumer imports
            those symbols, and nothing imports the consumer's functions that reach them
            (solver_functions). A target wheel is looked at with its base: a stand-in of
            either wheel is imported only by its consumer, in either wheel. The glibc
            compatibility library is every file's: the glibc-floor check looks at it.
"""

from __future__ import annotations

import posixpath
import re

from builder.check.context import Check, Context
from builder.check.elf_paths import is_library
from builder.check.results import CheckResult, check_result, counted
from builder.rocm.standins import behaviour_of

NAME = "standins"


def check_standins(ctx: Context) -> CheckResult:
    """Generated stand-ins (stacks.toml, runtime.toml): only their consumers import what they
    define, and no library imports a function of a consumer that would reach them."""
    sides = [(ctx.contents, ctx.info or {}, posixpath.basename(ctx.info_member or "_runtime.json"), ctx.libs_dir,
              "the wheel")]
    if ctx.base is not None:
        sides.append((ctx.base.contents, ctx.base.info, "_runtime.json", ctx.base.libs_dir, "the base wheel"))
    declared = [(s, side) for side in sides for s in side[1].get("standins") or []
                if isinstance(s, dict) and s.get("role") != "glibc-compat"]
    if not declared:
        return CheckResult(NAME, True, "the wheel carries no generated stand-in"
                           + (", nor does its base wheel" if ctx.base is not None else ""))
    problems, found = [], []
    for s, (contents, _, record, libs_dir, which) in declared:
        soname, consumer = s.get("soname", "?"), s.get("consumer", "?")
        symbols = set(s.get("symbols", []))
        members = [m for m in sorted(contents.elf) if is_library(libs_dir, m, soname)]
        if not members:
            problems.append(f"{record} lists the stand-in {soname} but {which} does not carry it")
            continue
        missing = sorted(symbols - contents.details[members[0]].exports)
        if missing:
            problems.append(f"the stand-in {soname} does not define {counted(len(missing), 'declared symbol')}, "
                            f"e.g. {missing[0]}")
        problems += _reaching(s, sides, contents, members[0])
        found.append(f"{soname} stands in for {s.get('replaces')} ({len(symbols)} functions); only {consumer} "
                     "imports them" + (", and nothing imports its solver functions" if s.get("solver_functions") else ""))
    either = " (in either wheel of the pair)" if ctx.base is not None else ""
    return check_result(NAME, problems, "; ".join(found) + either)


def _reaching(s: dict, sides: list, contents, standin: str) -> list[str]:
    """The libraries, in either wheel, that import the stand-in's symbols or its consumer's
    solver functions (other than the stand-in itself and its consumers)."""
    soname, consumer = s.get("soname", "?"), s.get("consumer", "?")
    consumers = [c.strip() for c in consumer.split(",")]
    symbols = set(s.get("symbols", []))
    solver = re.compile(s.get("solver_functions") or r"(?!)")
    problems = []
    for other, _, _, other_libs, _ in sides:
        for member, details in sorted(other.details.items()):
            if other is contents and member == standin or any(is_library(other_libs, member, c) for c in consumers):
                continue
            reached = sorted(details.imports & symbols)
            if reached:
                problems.append(f"{posixpath.basename(member)} imports {reached[0]}, which only the stand-in "
                                f"{soname} defines (each of its functions {behaviour_of(s)})")
            calls = sorted(n for n in details.imports if solver.search(n))
            if calls:
                problems.append(f"{posixpath.basename(member)} imports {calls[0]} of {consumer}, which reaches "
                                f"the stand-in {soname}")
    return problems


CHECK = Check(NAME, check_standins)
