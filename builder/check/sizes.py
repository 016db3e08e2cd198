"""What takes the room in a wheel: `moshi-build --size-report`.

Read from the wheel's zip directory alone (reader.inspect_wheel without ELF
facts: nothing extracted): per file its compressed size (what users download)
and its size once installed, the largest files, and the totals per folder of
the installed tree.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path, PurePosixPath

from builder.common.wheel_reader import inspect_wheel


@dataclasses.dataclass(frozen=True)
class FileSize:
    name: str
    compressed: int
    installed: int


@dataclasses.dataclass
class SizeReport:
    wheel: Path
    files: list[FileSize]

    @property
    def compressed(self) -> int:
        return self.wheel.stat().st_size

    @property
    def installed(self) -> int:
        return sum(f.installed for f in self.files)

    def largest(self, n: int = 10) -> list[FileSize]:
        return sorted(self.files, key=lambda f: f.installed, reverse=True)[:n]

    def by_folder(self, depth: int = 2) -> list[tuple[str, int, int, int]]:
        """(folder, file count, compressed, installed) for the folders `depth` levels deep, largest first."""
        totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
        for f in self.files:
            parts = PurePosixPath(f.name).parts[:-1][:depth]
            key = "/".join(parts) + "/" if parts else "(top level)"
            t = totals[key]
            t[0] += 1
            t[1] += f.compressed
            t[2] += f.installed
        return sorted(((k, *v) for k, v in totals.items()), key=lambda row: row[3], reverse=True)


def read_sizes(wheel: Path) -> SizeReport:
    report = inspect_wheel(Path(wheel), elf=False)
    files = [FileSize(name, report.compressed[name], size) for name, size in report.files.items()]
    return SizeReport(report.path, files)


def _mb(n: int) -> str:
    return f"{n / 1e6:9.1f} MB"


def format_report(report: SizeReport, top: int = 10) -> str:
    lines = [f"{report.wheel.name}: {_mb(report.compressed).strip()} compressed, "
             f"{_mb(report.installed).strip()} installed, {len(report.files)} files",
             f"  {'installed':>12} {'compressed':>12}  largest files"]
    for f in report.largest(top):
        lines.append(f"  {_mb(f.installed)} {_mb(f.compressed)}  {f.name}")
    lines.append(f"  {'installed':>12} {'compressed':>12}  {'files':>5}  by folder")
    for folder, count, compressed, installed in report.by_folder():
        lines.append(f"  {_mb(installed)} {_mb(compressed)}  {count:5d}  {folder}")
    return "\n".join(lines)
