"""Read which GPU targets an ELF file carries device code for, without a GPU.

HIP objects keep device code in the `.hip_fatbin` section as clang offload
bundles: a 24-byte magic, a u64 entry count, then per entry u64 offset, u64
size, u64 id length and the id (e.g. `hipv4-amdgcn-amd-amdhsa--gfx1100`).
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path

from elftools.elf.elffile import ELFFile

MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_MAGIC = b"CCOB"
_TARGET = re.compile(r"--(gfx[0-9a-f]+)")


@dataclasses.dataclass(frozen=True)
class BundleEntry:
    id: str
    size: int

    @property
    def gpu_target(self) -> str | None:
        """gfx name of a device entry (feature suffixes like :xnack- dropped); None for the host."""
        m = _TARGET.search(self.id)
        return m.group(1) if m else None


@dataclasses.dataclass(frozen=True)
class FatbinSummary:
    bundles: int
    compressed_bundles: int
    entries: tuple[BundleEntry, ...]

    @property
    def targets(self) -> dict[str, int]:
        """Bytes of device code per gfx target."""
        sizes: dict[str, int] = {}
        for e in self.entries:
            if e.gpu_target:
                sizes[e.gpu_target] = sizes.get(e.gpu_target, 0) + e.size
        return sizes


def parse_bundles(data: bytes) -> FatbinSummary:
    entries: list[BundleEntry] = []
    bundles = compressed = 0
    pos = 0
    while True:
        plain = data.find(MAGIC, pos)
        packed = data.find(COMPRESSED_MAGIC, pos)
        if plain < 0 and packed < 0:
            break
        if packed >= 0 and (plain < 0 or packed < plain):
            compressed += 1
            pos = packed + len(COMPRESSED_MAGIC)
            continue
        start = plain
        (count,) = struct.unpack_from("<Q", data, start + len(MAGIC))
        off = start + len(MAGIC) + 8
        end = start
        for _ in range(count):
            e_off, e_size, id_len = struct.unpack_from("<QQQ", data, off)
            off += 24
            ident = data[off:off + id_len].decode("ascii", "replace")
            off += id_len
            entries.append(BundleEntry(ident, e_size))
            end = max(end, start + e_off + e_size)
        bundles += 1
        pos = max(end, off)
    return FatbinSummary(bundles, compressed, tuple(entries))


def fatbin_summary(path: Path) -> FatbinSummary | None:
    """Summary of an ELF file's `.hip_fatbin` section, or None if it has none."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        section = elf.get_section_by_name(".hip_fatbin")
        if section is None:
            return None
        return parse_bundles(section.data())
