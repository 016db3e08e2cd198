"""One pass over a wheel collects what every check of `moshi-build verify` needs.

read_wheel() reads the archive once through common/wheel_reader.inspect_wheel() and keeps:

  report    the reader's WheelReport: members, sizes, tags, the dynamic section of each ELF
            member, and what pip would refuse (the archive check)
  details   per ELF member: symbol versions needed per library, imported and exported
            dynamic symbols, the offload bundles of .hip_fatbin, the versioned symbols
  scanner   every place a member mentions a path of the build machine (PathScanner)
  texts     the small members read whole: _runtime.json, _target.json, METADATA, RECORD, the SBOM
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

from elftools.elf.elffile import ELFFile

from builder.common.wheel_reader import WheelReport, inspect_wheel
from builder.common import elfinfo
from builder.package.sbom import SBOM_DIR, SBOM_FILE
from builder.package.symver import ElfVersionError, SymbolVersions, read_versions
from builder.rocm.offload import BundleFormatError, FatbinSummary, fatbin_summary

# Bytes that end a path inside a binary or a text file.
_PATH_END = re.compile(rb"[\x00-\x20\"'<>`|;,()\[\]{}\x7f-\xff]")
_HITS_KEPT = 3          # paths remembered per member (the count is exact)

# _runtime.json, _target.json, METADATA, RECORD and the SBOM are read whole into memory: ours are
# at most a few MB (RECORD of a target wheel: 30 KB; models.json is not read here)
MAX_TEXT_BYTES = 16 << 20
SBOM_SUFFIX = f".dist-info/{SBOM_DIR}/{SBOM_FILE}"
_READ_WHOLE = ("/_runtime.json", "/_target.json", ".dist-info/METADATA", SBOM_SUFFIX, ".dist-info/RECORD")


class PathScanner:
    """Finds the needles in a stream of chunks per member (matches across chunk borders too)."""

    def __init__(self, needles: Sequence[str]) -> None:
        self.needles = [n.encode() for n in needles]
        self.overlap = max((len(n) for n in self.needles), default=1) - 1
        self.hits: dict[str, list[str]] = {}     # member -> first paths found
        self.counts: dict[str, int] = {}
        self._member: str | None = None
        self._tail = b""

    def __call__(self, member: str, chunk: bytes) -> None:
        if not self.needles:
            return
        if member != self._member:
            self._member, self._tail = member, b""
        data = self._tail + chunk
        start_new = len(self._tail)
        matches = []
        for needle in self.needles:
            pos = data.find(needle)
            while pos >= 0:
                if pos + len(needle) > start_new:      # not already seen in the previous chunk
                    matches.append((pos, len(needle)))
                pos = data.find(needle, pos + 1)
        covered = -1
        for pos, length in sorted(matches):
            if pos >= covered:                          # one path found by two needles counts once
                covered = self._record(member, data, pos, length)
        self._tail = data[-self.overlap:] if self.overlap else b""

    def _record(self, member: str, data: bytes, pos: int, length: int) -> int:
        """Count the path around data[pos:pos+length]; returns where it ends."""
        self.counts[member] = self.counts.get(member, 0) + 1
        m = _PATH_END.search(data, pos + length, pos + length + 300)
        end = m.start() if m else min(len(data), pos + length + 300)
        kept = self.hits.setdefault(member, [])
        if len(kept) < _HITS_KEPT:
            begin = pos
            while begin > 0 and pos - begin < 200 and not _PATH_END.match(data, begin - 1):
                begin -= 1
            text = data[begin:end].decode("utf-8", "replace")
            if text not in kept:
                kept.append(text)
        return end


@dataclasses.dataclass
class ElfDetails:
    versions: dict[str, set[str]]        # needed library -> symbol versions (GLIBC_2.34, ...)
    fatbin: FatbinSummary | None
    imports: frozenset[str] = frozenset()   # undefined dynamic symbols
    exports: frozenset[str] = frozenset()   # defined dynamic symbols
    fatbin_error: str | None = None         # .hip_fatbin could not be read
    symbols: SymbolVersions | None = None   # versioned imports and exports (the glibc-floor check)


@dataclasses.dataclass
class WheelContents:
    report: WheelReport
    details: dict[str, ElfDetails]
    scanner: PathScanner
    texts: dict[str, str]                 # small text members read whole (_runtime.json, METADATA)

    @property
    def files(self) -> dict[str, int]:
        return self.report.files

    @property
    def elf(self) -> dict[str, elfinfo.ElfInfo]:
        return self.report.elf


def elf_details(file: Path) -> ElfDetails:
    """What the checks need of one extracted ELF member beyond its dynamic section."""
    from auditwheel.elfutils import elf_find_versioned_symbols  # auditwheel's own reader

    versions: dict[str, set[str]] = {}
    imports, exports = set(), set()
    with open(file, "rb") as f:
        elf = ELFFile(f)
        for library, version in elf_find_versioned_symbols(elf):
            versions.setdefault(library, set()).add(version)
        dynsym = elf.get_section_by_name(".dynsym")
        if dynsym is not None:
            for sym in dynsym.iter_symbols():
                if not sym.name:
                    continue
                (imports if sym["st_shndx"] == "SHN_UNDEF" else exports).add(sym.name)
    try:
        fatbin, error = fatbin_summary(file), None
    except BundleFormatError as e:
        fatbin, error = None, str(e)
    try:
        symbols = dataclasses.replace(read_versions(file), dynstr=b"")
    except ElfVersionError:
        symbols = None   # the glibc-floor check names the file
    return ElfDetails(versions, fatbin, frozenset(imports), frozenset(exports), error, symbols)


def read_wheel(path: Path, needles: Sequence[str], max_elf_size: int | None = None) -> WheelContents:
    details: dict[str, ElfDetails] = {}
    texts: dict[str, bytearray] = {}
    scanner = PathScanner(needles)

    def scan(member: str, chunk: bytes) -> None:
        scanner(member, chunk)
        if member.endswith(_READ_WHOLE):
            kept = texts.setdefault(member, bytearray())
            if len(kept) <= MAX_TEXT_BYTES:   # a longer one is cut: it then fails to parse, in one line
                kept.extend(chunk[:MAX_TEXT_BYTES + 1 - len(kept)])

    def examine(member: str, file: Path, facts: elfinfo.ElfInfo) -> None:
        details[member] = elf_details(file)

    report = inspect_wheel(path, scan=scan, examine=examine, strict=True, max_elf_size=max_elf_size)
    return WheelContents(report, details, scanner, {k: v.decode("utf-8", "replace") for k, v in texts.items()})
