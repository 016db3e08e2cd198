"""`moshi-build verify`'s archive check: the wheel reads as pip installs it.

  archive  no absolute or '..' member name, no symbolic link, no member of absurd size or
           compression ratio, and RECORD lists every member with its sha256 and size
           (common/wheel_reader.inspect_wheel finds the problems while reading the wheel)

The runner takes this result before it knows the wheel's kind: a target wheel that cannot be
paired with its base still reports a broken archive.
"""

from __future__ import annotations

from builder.check.context import Check, Context
from builder.check.results import CheckResult, check_result, counted
from builder.check.wheel_contents import WheelContents

NAME = "archive"


def archive_result(contents: WheelContents) -> CheckResult:
    report = contents.report
    return check_result(NAME, list(report.problems),
                        f"{counted(len(report.files), 'member')} install inside the tree and match RECORD")


def check_archive(ctx: Context) -> CheckResult:
    return archive_result(ctx.contents)


CHECK = Check(NAME, check_archive)
