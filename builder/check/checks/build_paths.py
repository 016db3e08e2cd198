"""`moshi-build verify`'s build-paths check: no file mentions a directory of the build machine.

  build-paths  no member contains a build path (settings.build_path_needles() says what
               counts); the members were searched while the wheel was read (PathScanner)
"""

from __future__ import annotations

from builder.check.context import Check, Context
from builder.check.results import CheckResult, check_result, counted

NAME = "build-paths"


def check_build_paths(ctx: Context) -> CheckResult:
    scanner = ctx.contents.scanner
    problems = []
    for member in sorted(scanner.counts, key=lambda m: -scanner.counts[m]):
        n = scanner.counts[member]
        problems.append(f"{member} mentions {counted(n, 'build path')}, e.g. {scanner.hits[member][0]}")
    if problems:
        problems[0] = f"paths of the build machine in {counted(len(problems), 'file')}: {problems[0]}"
    left_out = f" ({', '.join(ctx.generic)} too generic, not searched)" if ctx.generic else ""
    return check_result(NAME, problems, f"no file mentions {', '.join(ctx.needles)}{left_out}")


CHECK = Check(NAME, check_build_paths)
