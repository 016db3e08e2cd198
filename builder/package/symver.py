"""ELF symbol versions: what a file imports at which version, what it defines, and the
one in-place edit the glibc floor needs (a version need pointed at another version).

Read with pyelftools for the sections and by hand for .gnu.version_r, whose entries'
file offsets the rewrite needs. Everything read is bounded by its section: a hostile
file gives an ElfVersionError, never an endless walk or a write outside the section.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Iterable

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

_VERNEED = struct.Struct("<HHIII")     # vn_version, vn_cnt, vn_file, vn_aux, vn_next
_VERNAUX = struct.Struct("<IHHII")     # vna_hash, vna_flags, vna_other, vna_name, vna_next
_MAX_ENTRIES = 4096


class ElfVersionError(ValueError):
    """The file's version sections cannot be read."""


def elf_hash(name: str) -> int:
    """The SysV ELF hash (vna_hash / vd_hash)."""
    h = 0
    for c in name.encode():
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


@dataclasses.dataclass(frozen=True)
class VersionNeed:
    """One Vernaux entry: `file` (a DT_NEEDED name) must define `version`."""
    file: str
    version: str
    index: int          # vna_other: the value .gnu.version gives the symbols bound to it
    offset: int         # file offset of the entry


@dataclasses.dataclass
class SymbolVersions:
    needs: list[VersionNeed]
    imports: dict[str, VersionNeed | None]      # undefined dynamic symbol -> its version need
    exports: dict[str, set[str]]                # defined dynamic symbol -> versions it is defined at
    defined_versions: set[str]                  # the file's own version definitions (verdef)
    dynstr_offset: int                          # file offset of .dynstr
    dynstr: bytes

    def imports_from(self, files: Iterable[str]) -> dict[tuple[str, str], str]:
        """(symbol, version) -> needed file, for the imports bound to a need on one of `files`."""
        files = set(files)
        return {(name, need.version): need.file for name, need in self.imports.items()
                if need is not None and need.file in files}


def _string(dynstr: bytes, offset: int) -> str:
    if not 0 <= offset < len(dynstr):
        raise ElfVersionError(f"string offset {offset} outside .dynstr")
    end = dynstr.find(b"\0", offset)
    if end < 0:
        raise ElfVersionError("unterminated string in .dynstr")
    return dynstr[offset:end].decode("utf-8", "replace")


def _parse_verneed(data: bytes, base: int, dynstr: bytes) -> list[VersionNeed]:
    needs, pos, seen = [], 0, 0
    while True:
        if pos < 0 or pos + _VERNEED.size > len(data):
            raise ElfVersionError("a version need runs past .gnu.version_r")
        _, count, file_off, aux, nxt = _VERNEED.unpack_from(data, pos)
        file = _string(dynstr, file_off)
        apos = pos + aux
        for _ in range(count):
            seen += 1
            if seen > _MAX_ENTRIES or apos + _VERNAUX.size > len(data):
                raise ElfVersionError("a version need entry runs past .gnu.version_r")
            _, _, other, name_off, anext = _VERNAUX.unpack_from(data, apos)
            needs.append(VersionNeed(file, _string(dynstr, name_off), other & 0x7FFF, base + apos))
            if anext == 0:
                break
            apos += anext
        if nxt == 0:
            return needs
        pos += nxt


def read_versions(path: Path) -> SymbolVersions:
    """The version needs, versioned imports and exports of the ELF file at `path`."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            dynsym = elf.get_section_by_name(".dynsym")
            dynstr_sec = elf.get_section_by_name(".dynstr")
            if dynsym is None or dynstr_sec is None:
                return SymbolVersions([], {}, {}, set(), 0, b"")
            dynstr = dynstr_sec.data()
            verneed = next((s for s in elf.iter_sections() if s["sh_type"] == "SHT_GNU_verneed"), None)
            needs = _parse_verneed(verneed.data(), verneed["sh_offset"], dynstr) if verneed is not None else []
            by_index = {n.index: n for n in needs}
            verdef = next((s for s in elf.iter_sections() if s["sh_type"] == "SHT_GNU_verdef"), None)
            definitions: dict[int, str] = {}
            if verdef is not None:
                for vd, aux_iter in verdef.iter_versions():
                    names = [a.name for a in aux_iter]
                    if names:
                        definitions[vd["vd_ndx"]] = names[0]
            versym = next((s for s in elf.iter_sections() if s["sh_type"] == "SHT_GNU_versym"), None)
            indexes = [e["ndx"] for e in versym.iter_symbols()] if versym is not None else []
            imports: dict[str, VersionNeed | None] = {}
            exports: dict[str, set[str]] = {}
            for i, sym in enumerate(dynsym.iter_symbols()):
                if not sym.name:
                    continue
                ndx = indexes[i] if i < len(indexes) else "VER_NDX_GLOBAL"
                ndx = ndx & 0x7FFF if isinstance(ndx, int) else None
                if sym["st_shndx"] == "SHN_UNDEF":
                    imports[sym.name] = by_index.get(ndx) if ndx is not None else None
                elif sym["st_info"]["bind"] != "STB_LOCAL":
                    exports.setdefault(sym.name, set()).add(definitions.get(ndx, "") if ndx else "")
            return SymbolVersions(needs, imports, exports, set(definitions.values()),
                                  dynstr_sec["sh_offset"], dynstr)
    except (ELFError, OSError, struct.error, KeyError, AttributeError) as e:
        raise ElfVersionError(f"{path}: cannot read its symbol versions: {e}") from None


def string_offset(versions: SymbolVersions, text: str) -> int | None:
    """Offset in .dynstr of a NUL-terminated `text` (a whole string or the tail of one)."""
    needle = text.encode() + b"\0"
    pos = versions.dynstr.find(needle)
    return None if pos < 0 else pos


def point_need_at(path: Path, need: VersionNeed, version: str, versions: SymbolVersions) -> None:
    """Rewrite one Vernaux entry in place: `need` now asks its file for `version`, a string
    .dynstr already holds (same file size, no section moved)."""
    offset = string_offset(versions, version)
    if offset is None:
        raise ElfVersionError(f"{path.name}: no {version!r} string in .dynstr ({len(versions.dynstr)} bytes at "
                              f"{versions.dynstr_offset}) to point {need.version} at")
    with open(path, "r+b") as f:
        f.seek(need.offset)
        raw = f.read(_VERNAUX.size)
        if len(raw) != _VERNAUX.size:
            raise ElfVersionError(f"{path.name}: version need at {need.offset} is past the end")
        _, flags, other, _, nxt = _VERNAUX.unpack(raw)
        f.seek(need.offset)
        f.write(_VERNAUX.pack(elf_hash(version), flags, other, offset, nxt))
