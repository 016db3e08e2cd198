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
    # Each magic is searched again only once `pos` passed its last hit: a search that
    # found nothing would scan the rest of the section (1 GB in rocBLAS) every bundle.
    plain, packed = data.find(MAGIC), data.find(COMPRESSED_MAGIC)
    while True:
        if 0 <= plain < pos:
            plain = data.find(MAGIC, pos)
        if 0 <= packed < pos:
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


@dataclasses.dataclass(frozen=True)
class TrimResult:
    bundles: int
    entries_dropped: int
    bytes_zeroed: int


def _fatbin_section(f) -> tuple[int, int] | None:
    """(file offset, size) of `.hip_fatbin`, or None."""
    section = ELFFile(f).get_section_by_name(".hip_fatbin")
    if section is None or section["sh_type"] == "SHT_NOBITS":
        return None
    return section["sh_offset"], section["sh_size"]


def trim_to_target(path: Path, gpu_target: str) -> TrimResult:
    """Keep only the host entry and `gpu_target`'s device code in every bundle of a fat binary, in place.

    The layout is left as it is: each bundle keeps its place and size (the host
    code points at bundle starts), its header lists only the kept entries, and
    the bytes of the dropped entries become zeros. The file stays the same size
    on disk, but compresses to about one target's worth: what the wheel carries.
    The HIP runtime picks a code object by its id in the header, so the dropped
    targets are simply absent.
    """
    with open(path, "r+b") as f:
        found = _fatbin_section(f)
        if found is None:
            return TrimResult(0, 0, 0)
        base, size = found
        f.seek(base)
        data = bytearray(f.read(size))
    summary = parse_bundles(bytes(data))
    if summary.compressed_bundles:
        raise ValueError(f"{path}: {summary.compressed_bundles} compressed offload bundles; trimming them "
                         "is not supported")
    if gpu_target not in summary.targets:
        raise ValueError(f"{path} carries no device code for {gpu_target} "
                         f"(it has {', '.join(sorted(summary.targets)) or 'none'})")
    bundles = dropped = zeroed = 0
    pos = data.find(MAGIC)
    while pos >= 0:
        (count,) = struct.unpack_from("<Q", data, pos + len(MAGIC))
        off = pos + len(MAGIC) + 8
        kept, gone, end = [], [], pos
        for _ in range(count):
            e_off, e_size, id_len = struct.unpack_from("<QQQ", data, off)
            ident = bytes(data[off + 24:off + 24 + id_len])
            off += 24 + id_len
            entry = BundleEntry(ident.decode("ascii", "replace"), e_size)
            (kept if entry.gpu_target in (None, gpu_target) else gone).append((e_off, e_size, ident))
            end = max(end, pos + e_off + e_size)
        header_end = off
        header = MAGIC + struct.pack("<Q", len(kept)) + b"".join(
            struct.pack("<QQQ", o, s, len(i)) + i for o, s, i in kept)
        data[pos:header_end] = header + bytes(header_end - pos - len(header))
        zeroed += header_end - pos - len(header)
        for e_off, e_size, _ in gone:
            data[pos + e_off:pos + e_off + e_size] = bytes(e_size)
            zeroed += e_size
        dropped += len(gone)
        bundles += 1
        pos = data.find(MAGIC, max(end, header_end))
    with open(path, "r+b") as f:
        f.seek(base)
        f.write(data)
    return TrimResult(bundles, dropped, zeroed)
