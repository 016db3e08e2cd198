"""Where the loader looks for an ELF member's libraries inside a wheel: its $ORIGIN RPATH."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from typing import Iterable, Mapping

from builder.check.wheel_contents import WheelContents
from builder.common.wheel_reader import built_name


def origin_dirs(member: str, entries: Iterable[str]) -> tuple[list[str], list[str]]:
    """(wheel folders an ELF member's RPATH/RUNPATH names, entries that are not $ORIGIN-relative or leave the wheel)."""
    folder = posixpath.dirname(member)
    dirs, bad = [], []
    for entry in entries:
        m = re.match(r"^(\$ORIGIN|\$\{ORIGIN\})(/.*)?$", entry)
        if not m:
            bad.append(entry)
            continue
        d = posixpath.normpath(posixpath.join(folder, (m.group(2) or "").lstrip("/")))
        if d == ".." or d.startswith("../"):
            bad.append(entry)
            continue
        dirs.append("" if d == "." else d)
    return dirs, bad


def found_in(dirs: Iterable[str], name: str, files: Mapping[str, int]) -> str | None:
    """The member `name` is in the first of `dirs` holding it, or None."""
    for d in dirs:
        candidate = f"{d}/{name}" if d else name
        if candidate in files:
            return candidate
    return None


def library_closure(contents: WheelContents, member: str) -> list[str]:
    """`member` and the ELF members it needs, through each one's $ORIGIN RPATH, transitively."""
    files, elf = contents.files, contents.elf
    seen, todo = [member], [member]
    while todo:
        current = todo.pop()
        dirs, _ = origin_dirs(current, elf[current].runpath)
        for needed in elf[current].needed:
            found = found_in(dirs, needed, files)
            if found in elf and found not in seen:
                seen.append(found)
                todo.append(found)
    return sorted(seen)


def elf_members_named(contents: WheelContents, libs_dir: str | None, pattern: str) -> list[str]:
    """The ELF members whose name as built (auditwheel's hash dropped) matches the glob `pattern`."""
    return [m for m in sorted(contents.elf) if fnmatch.fnmatchcase(built_name(m, libs_dir), pattern)]


def is_library(libs_dir: str | None, member: str, soname: str) -> bool:
    """The member is the library `soname` names (its file may carry a longer version: libhipblas.so.3.2)."""
    name = built_name(member, libs_dir)
    return name == soname or name.startswith(soname + ".")
