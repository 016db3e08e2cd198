"""Reads a built wheel in one pass: sizes, modes, tags and the dynamic section of every ELF member.

The one reader of built wheels: `moshi-build verify` (verify.py), the size
report (sizes.py) and the packaging step after auditwheel's repair
(package/wheel.py) all read through inspect_wheel(). It imports nothing of
the wheel builder (package/wheel, staging, project); auditwheel's naming of
grafted files lives here, both ways (grafted_name, built_name).
"""

from __future__ import annotations
import contextlib
import dataclasses
import logging
import os
import posixpath
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable
from packaging.utils import parse_wheel_filename
from builder.package import elfinfo
from builder.package.elfinfo import read_elf


log = logging.getLogger(__name__)

# auditwheel's name for a grafted file: libfoo.so.1.2 -> libfoo-<first 8 hex digits of its sha256>.so.1.2
_GRAFTED = re.compile(r"^(?P<base>.+)-[0-9a-f]{8}(?P<ext>\..+)$")


def grafted_name(soname_file: str, sha8: str) -> str:
    """The name auditwheel gives a grafted file: libfoo.so.1.2 -> libfoo-<sha8>.so.1.2."""
    base, ext = soname_file.split(".", 1)
    return f"{base}-{sha8}.{ext}"


def built_name(member: str, libs_dir: str | None) -> str:
    """A member's file name as built: auditwheel's -<sha8> dropped for grafted libraries (in libs_dir)."""
    name = posixpath.basename(member)
    if libs_dir and member.startswith(libs_dir + "/"):
        m = _GRAFTED.match(name)
        if m:
            return m.group("base") + m.group("ext")
    return name


@dataclasses.dataclass
class WheelReport:
    path: Path
    size: int                                  # compressed (the file)
    installed_size: int
    files: dict[str, int]                      # member -> uncompressed size
    modes: dict[str, int]
    tags: list[str]
    elf: dict[str, elfinfo.ElfInfo]            # member -> dynamic section facts
    compressed: dict[str, int] = dataclasses.field(default_factory=dict)   # member -> size in the archive

    @property
    def platform_tags(self) -> list[str]:
        return sorted({t.split("-")[-1] for t in self.tags})

    @property
    def libs_dir(self) -> str | None:
        """auditwheel's folder of grafted libraries (<distribution>.libs) at the wheel's root."""
        dirs = {m.split("/", 1)[0] for m in self.files if "/" in m and m.split("/", 1)[0].endswith(".libs")}
        return sorted(dirs)[0] if dirs else None

    def largest(self, n: int = 5) -> list[tuple[str, int]]:
        return sorted(self.files.items(), key=lambda kv: -kv[1])[:n]

    def summary(self) -> dict:
        return {
            "wheel": self.path.name, "size": self.size, "installed_size": self.installed_size,
            "tags": self.tags, "largest": self.largest(),
        }


def inspect_wheel(path: Path, elf: bool = True, *,
                  scan: Callable[[str, bytes], None] | None = None,
                  examine: Callable[[str, Path, elfinfo.ElfInfo], None] | None = None) -> WheelReport:
    """Sizes (installed and compressed), modes, tags and (elf=True) the dynamic section of every ELF member.

    One pass over the archive, nothing installed: scan(member, chunk) sees the
    bytes of every member in order (chunks of a few MB); examine(member, file,
    facts) is called for each ELF member while it sits extracted in `file`.
    """
    path = Path(path)
    name, version, build, tags = parse_wheel_filename(path.name)
    files, compressed, modes, elves = {}, {}, {}, {}
    # ELF members are extracted one at a time beside the wheel (large files stay off a small /tmp),
    # or in the temporary directory when that folder is read-only; a sizes-only read extracts nothing.
    extracts = elf or scan is not None
    where = path.parent if os.access(path.parent, os.W_OK) else None
    with zipfile.ZipFile(path) as zf, (tempfile.TemporaryDirectory(prefix="inspect-", dir=where) if extracts
                                       else contextlib.nullcontext("")) as tmp:
        target = Path(tmp) / "member"
        for info in zf.infolist():
            if info.is_dir():
                continue
            files[info.filename] = info.file_size
            compressed[info.filename] = info.compress_size
            modes[info.filename] = (info.external_attr >> 16) & 0o7777
            if not elf and scan is None:
                continue
            with zf.open(info) as src:
                chunk = src.read(4)
                is_elf = elf and chunk == elfinfo.ELF_MAGIC
                if not is_elf and scan is None:
                    continue
                with (open(target, "wb") if is_elf else contextlib.nullcontext()) as dst:
                    while chunk:
                        if scan is not None:
                            scan(info.filename, chunk)
                        if dst is not None:
                            dst.write(chunk)
                        chunk = src.read(1 << 22)
            if not is_elf:
                continue
            facts = read_elf(target)
            if facts is not None:
                elves[info.filename] = dataclasses.replace(facts, path=Path(info.filename))
                if examine is not None:
                    examine(info.filename, target, elves[info.filename])
            target.unlink()
    return WheelReport(path, path.stat().st_size, sum(files.values()), files, modes,
                       sorted(str(t) for t in tags), elves, compressed)
