"""manylinux policies as auditwheel defines them: the one a wheel's platform tag claims, and
the newest symbol version of each prefix (GLIBC, GLIBCXX, ...) a wheel needs."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(?P<arch>.+)$")
_LEGACY = re.compile(r"^manylinux(?:1|2010|2014)_(?P<arch>.+)$")


def policies_of(arch: str):
    """auditwheel's WheelPolicies of glibc on `arch`."""
    from auditwheel.architecture import Architecture
    from auditwheel.libc import Libc
    from auditwheel.policy import WheelPolicies

    return WheelPolicies(libc=Libc.GLIBC, arch=Architecture(arch))


def claimed_policy(platform_tags: Sequence[str]):
    """The auditwheel Policy of the most compatible manylinux tag the wheel claims, or None."""
    best = None
    for tag in platform_tags:
        m = MANYLINUX.match(tag) or _LEGACY.match(tag)
        if not m:
            continue
        try:
            policy = policies_of(m.group("arch")).get_policy_by_name(tag)
        except (LookupError, ValueError):
            continue
        if best is None or policy.priority > best.priority:
            best = policy
    return best


def version_key(version: str) -> tuple:
    """GLIBC_2.34 -> (2, 34): symbol versions of one prefix in order."""
    return tuple(int(x) if x.isascii() and x.isdigit() else 0 for x in re.split(r"[._]", version.partition("_")[2]))


def highest_versions(versions: Iterable[str]) -> dict[str, str]:
    """{"GLIBC": "GLIBC_2.34", "GLIBCXX": "GLIBCXX_3.4.32", ...}: the newest of each prefix."""
    best: dict[str, str] = {}
    for v in versions:
        prefix = v.partition("_")[0]
        if prefix not in best or version_key(v) > version_key(best[prefix]):
            best[prefix] = v
    return best
