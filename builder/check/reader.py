"""Reads a built wheel in one pass: sizes, modes, tags and the dynamic section of every ELF member."""

from __future__ import annotations
import contextlib
import dataclasses
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Callable
from packaging.utils import parse_wheel_filename
from builder.package import elfinfo
from builder.package.elfinfo import read_elf


log = logging.getLogger(__name__)


@dataclasses.dataclass
class WheelReport:
    path: Path
    size: int                                  # compressed (the file)
    installed_size: int
    files: dict[str, int]                      # member -> uncompressed size
    modes: dict[str, int]
    tags: list[str]
    elf: dict[str, elfinfo.ElfInfo]            # member -> dynamic section facts

    @property
    def platform_tags(self) -> list[str]:
        return sorted({t.split("-")[-1] for t in self.tags})

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
    """Sizes, modes, tags and (elf=True) the dynamic section of every ELF member of a wheel.

    One pass over the archive, nothing installed: scan(member, chunk) sees the
    bytes of every member in order (chunks of a few MB); examine(member, file,
    facts) is called for each ELF member while it sits extracted in `file`.
    """
    path = Path(path)
    name, version, build, tags = parse_wheel_filename(path.name)
    files, modes, elves = {}, {}, {}
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="inspect-", dir=path.parent) as tmp:
        target = Path(tmp) / "member"
        for info in zf.infolist():
            if info.is_dir():
                continue
            files[info.filename] = info.file_size
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
                       sorted(str(t) for t in tags), elves)
