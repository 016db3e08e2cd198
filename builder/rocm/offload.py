"""Read and trim the GPU device code of an ELF file, without a GPU.

HIP objects keep device code in the `.hip_fatbin` section as clang offload
bundles, one after another (the host code points at each bundle's start):

  plain       `__CLANG_OFFLOAD_BUNDLE__`, u64 entry count, then per entry u64
              offset, u64 size, u64 id length and the id (e.g.
              `hipv4-amdgcn-amd-amdhsa--gfx1100`); offsets are from the bundle start.
  compressed  (clang --offload-compress) `CCOB`, u16 format version, u16 method
              (0 zlib, 1 zstd), then
                version 1: u32 uncompressed size, u64 hash                   (20 bytes)
                version 2: u32 total size, u32 uncompressed size, u64 hash   (24 bytes)
                version 3: u64 total size, u64 uncompressed size, u64 hash   (32 bytes)
              and one compressed stream holding a whole plain bundle. The hash is
              the low 64 bits of the MD5 of the uncompressed bundle (checked against
              rocBLAS 7.2.4's bundles). Bundles are read by the header's total size
              (LLVM's own reader does the same; clang-offload-bundler has been seen to
              read past a compressed bundle's end).

Trimming keeps the host entry and one target's entries in every bundle, in
place: a plain bundle's header lists only the kept entries and the dropped
entries' bytes become zeros (same size, compresses to one target's worth); a
compressed bundle is decompressed, trimmed the same way, compressed again with
a new header and written at the same place, the rest of its old extent zeroed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
import zlib
from pathlib import Path
from typing import Iterator

import zstandard
from elftools.elf.elffile import ELFFile

from builder.rocm import gfx

MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_MAGIC = b"CCOB"
METHOD_ZLIB, METHOD_ZSTD = 0, 1
# zstd level for the bundles we write: 19 makes rocBLAS's trimmed bundles 5% and ggml-hip's
# 16% smaller than clang's own level (measured on the 7.2 stack's gfx1100 builds).
ZSTD_LEVEL = 19
# The target after "--" in an entry id: gfx1100, gfx90a:xnack- (features dropped), and the
# generic ISAs (gfx11-generic, gfx10-3-generic); the names as builder/rocm/gfx.py parses them.
_TARGET = re.compile(rf"--({gfx.GENERIC}|{gfx.PROCESSOR})(?![0-9a-z])")


class BundleFormatError(ValueError):
    """A fat binary's bundles cannot be read (truncated, unknown version or method)."""


@dataclasses.dataclass(frozen=True)
class BundleEntry:
    id: str
    size: int
    offset: int = 0          # from the start of the (uncompressed) bundle

    @property
    def gpu_target(self) -> str | None:
        """gfx name of a device entry (feature suffixes like :xnack- dropped); None for the host."""
        m = _TARGET.search(self.id)
        return m.group(1) if m else None


@dataclasses.dataclass(frozen=True)
class Bundle:
    """One bundle of a section: where it is, and its entries (read from the plain bundle)."""

    start: int               # offset in the section
    extent: int              # bytes it occupies in the section (compressed: the header's total size)
    entries: tuple[BundleEntry, ...]
    plain: bytes             # the plain bundle (decompressed if need be)
    compressed: bool = False
    version: int = 0
    method: int = METHOD_ZSTD

    def code_object(self, gpu_target: str) -> bytes | None:
        """The first device entry for `gpu_target`, or None."""
        for e in self.entries:
            if e.gpu_target == gpu_target and e.size:
                return self.plain[e.offset:e.offset + e.size]
        return None


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


def _plain_entries(data: bytes | bytearray, start: int) -> tuple[list[tuple[int, int, bytes]], int, int]:
    """[(offset, size, id bytes)] of the plain bundle at `start`, the end of its header, its extent."""
    if len(data) < start + len(MAGIC) + 8:
        raise BundleFormatError(f"offload bundle at {start:#x} is truncated")
    (count,) = struct.unpack_from("<Q", data, start + len(MAGIC))
    off = start + len(MAGIC) + 8
    entries, end = [], off
    for _ in range(count):
        if off + 24 > len(data):
            raise BundleFormatError(f"offload bundle at {start:#x}: entry table runs past the data")
        e_off, e_size, id_len = struct.unpack_from("<QQQ", data, off)
        off += 24
        if off + id_len > len(data):
            raise BundleFormatError(f"offload bundle at {start:#x}: an entry id runs past the data")
        ident = bytes(data[off:off + id_len])
        off += id_len
        if start + e_off + e_size > len(data):
            raise BundleFormatError(f"offload bundle at {start:#x}: entry {ident!r} runs past the data")
        entries.append((e_off, e_size, ident))
        end = max(end, start + e_off + e_size)
    return entries, off, max(end, off) - start


# No zstd or zlib stream expands more than 32768 times (a zstd block of 128 KiB costs at least 4
# bytes; zlib stays under 1032): a header that claims more than twice that is damaged, and is refused
# before any memory is set aside for it.
MAX_RATIO = 1 << 16


def _decompress(method: int, payload: bytes, size: int, where: str) -> bytes:
    if size > MAX_RATIO * max(len(payload), 1):
        raise BundleFormatError(f"compressed offload bundle at {where}: {size} bytes cannot come from a "
                                f"{len(payload)}-byte stream")
    try:
        if method == METHOD_ZSTD:
            framed = zstandard.frame_content_size(payload)
            if framed not in (-1, size):
                raise BundleFormatError(f"compressed offload bundle at {where}: its stream holds {framed} bytes, "
                                        f"its header says {size}")
            return zstandard.ZstdDecompressor().decompress(payload, max_output_size=size)
        if method == METHOD_ZLIB:
            return zlib.decompress(payload)
    except (zstandard.ZstdError, zlib.error) as e:
        raise BundleFormatError(f"compressed offload bundle at {where}: {e}") from None
    except MemoryError:
        raise BundleFormatError(f"compressed offload bundle at {where}: {size} bytes do not fit in memory") from None
    raise BundleFormatError(f"compressed offload bundle at {where}: unknown compression method {method}")


_HEADERS = {1: ("<IQ", 20), 2: ("<IIQ", 24), 3: ("<QQQ", 32)}   # after magic, version, method


def _compressed_header(data: bytes | bytearray, pos: int) -> tuple[int, int, int, int, int]:
    """(version, method, header size, total size or 0, uncompressed size) of the CCOB at `pos`."""
    if len(data) < pos + 8:
        raise BundleFormatError(f"compressed offload bundle at {pos:#x} is truncated")
    _, version, method = struct.unpack_from("<4sHH", data, pos)
    if version not in _HEADERS:
        raise BundleFormatError(f"compressed offload bundle at {pos:#x}: unknown format version {version}")
    if method not in (METHOD_ZLIB, METHOD_ZSTD):
        raise BundleFormatError(f"compressed offload bundle at {pos:#x}: unknown compression method {method}")
    fmt, header = _HEADERS[version]
    if len(data) < pos + header:
        raise BundleFormatError(f"compressed offload bundle at {pos:#x} is truncated")
    fields = struct.unpack_from(fmt, data, pos + 8)
    if version == 1:
        return version, method, header, 0, fields[0]
    return version, method, header, fields[0], fields[1]


def _read_compressed(data: bytes | bytearray, pos: int) -> Bundle:
    version, method, header, total, uncompressed = _compressed_header(data, pos)
    if version == 1:
        # No total size: the stream's own end tells it (zstd frame or zlib stream).
        obj = zstandard.ZstdDecompressor().decompressobj() if method == METHOD_ZSTD else zlib.decompressobj()
        try:
            plain = obj.decompress(memoryview(data)[pos + header:])
        except (zstandard.ZstdError, zlib.error) as e:
            raise BundleFormatError(f"compressed offload bundle at {pos:#x}: {e}") from None
        total = len(data) - pos - len(obj.unused_data)
    else:
        if total < header or pos + total > len(data):
            raise BundleFormatError(f"compressed offload bundle at {pos:#x}: total size {total} runs past the data")
        plain = _decompress(method, bytes(data[pos + header:pos + total]), uncompressed, f"{pos:#x}")
    if len(plain) != uncompressed or not plain.startswith(MAGIC):
        raise BundleFormatError(f"compressed offload bundle at {pos:#x} does not hold a plain bundle of "
                                f"{uncompressed} bytes")
    raw, _, _ = _plain_entries(plain, 0)
    entries = tuple(BundleEntry(i.decode("ascii", "replace"), s, o) for o, s, i in raw)
    return Bundle(pos, total, entries, plain, True, version, method)


def iter_bundles(data: bytes | bytearray) -> Iterator[Bundle]:
    """Every bundle of a `.hip_fatbin` section, in order (padding between them skipped)."""
    pos = 0
    plain, packed = data.find(MAGIC), data.find(COMPRESSED_MAGIC)
    while True:
        # Each magic is searched again only once `pos` passed its last hit: a search that
        # found nothing would scan the rest of the section (1 GB in rocBLAS 6.4) every bundle.
        if 0 <= plain < pos:
            plain = data.find(MAGIC, pos)
        if 0 <= packed < pos:
            packed = data.find(COMPRESSED_MAGIC, pos)
        if plain < 0 and packed < 0:
            return
        if packed >= 0 and (plain < 0 or packed < plain):
            bundle = _read_compressed(data, packed)
        else:
            raw, _, extent = _plain_entries(data, plain)
            entries = tuple(BundleEntry(i.decode("ascii", "replace"), s, o) for o, s, i in raw)
            bundle = Bundle(plain, extent, entries, bytes(data[plain:plain + extent]))
        yield bundle
        pos = bundle.start + max(bundle.extent, 1)


def parse_bundles(data: bytes | bytearray) -> FatbinSummary:
    bundles = list(iter_bundles(data))
    return FatbinSummary(len(bundles), sum(b.compressed for b in bundles),
                         tuple(e for b in bundles for e in b.entries))


def fatbin_section(path: Path) -> bytes | None:
    """The `.hip_fatbin` section's bytes, or None if the ELF file has none."""
    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(".hip_fatbin")
        if section is None or section["sh_type"] == "SHT_NOBITS":
            return None
        return section.data()


def fatbin_summary(path: Path) -> FatbinSummary | None:
    """Summary of an ELF file's `.hip_fatbin` section, or None if it has none."""
    data = fatbin_section(path)
    return None if data is None else parse_bundles(data)


def md5_low64(data: bytes) -> int:
    """The hash field of a compressed bundle header: the MD5's first 8 bytes, little-endian."""
    return int.from_bytes(hashlib.md5(data).digest()[:8], "little")


def trim_plain(plain: bytearray, start: int, keep: set[str | None]) -> tuple[int, int]:
    """Trim the plain bundle at `start` of `plain` in place: (entries dropped, bytes zeroed)."""
    raw, header_end, _ = _plain_entries(plain, start)
    kept, gone = [], []
    for e_off, e_size, ident in raw:
        target = BundleEntry(ident.decode("ascii", "replace"), e_size).gpu_target
        (kept if target in keep else gone).append((e_off, e_size, ident))
    header = MAGIC + struct.pack("<Q", len(kept)) + b"".join(
        struct.pack("<QQQ", o, s, len(i)) + i for o, s, i in kept)
    zeroed = header_end - start - len(header)
    plain[start:header_end] = header + bytes(zeroed)
    for e_off, e_size, _ in gone:
        plain[start + e_off:start + e_off + e_size] = bytes(e_size)
        zeroed += e_size
    return len(gone), zeroed


def compress_bundle(plain: bytes, version: int, method: int) -> bytes:
    """A compressed bundle (header + stream) of `plain`, in format `version` (1, 2 or 3)."""
    if method == METHOD_ZSTD:
        payload = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(plain)
    elif method == METHOD_ZLIB:
        payload = zlib.compress(plain, 9)
    else:
        raise BundleFormatError(f"unknown compression method {method}")
    digest = md5_low64(plain)
    if version == 1:
        if len(plain) >= 2**32:
            raise BundleFormatError("bundle too large for compressed format version 1")
        return COMPRESSED_MAGIC + struct.pack("<HHIQ", 1, method, len(plain), digest) + payload
    if version == 3:
        header = COMPRESSED_MAGIC + struct.pack("<HHQQQ", 3, method, 32 + len(payload), len(plain), digest)
    else:
        total = 24 + len(payload)
        if total >= 2**32 or len(plain) >= 2**32:
            raise BundleFormatError("bundle too large for compressed format version 2")
        header = COMPRESSED_MAGIC + struct.pack("<HHIIQ", 2, method, total, len(plain), digest)
    return header + payload


def trim_bundle_file(path: Path, gpu_target: str) -> TrimResult | None:
    """A code-object file that is one offload bundle (rocBLAS's Tensile .co files), trimmed to
    `gpu_target` and, if compressed, compressed again; None if the file is not a bundle."""
    data = Path(path).read_bytes()
    if not data.startswith((MAGIC, COMPRESSED_MAGIC)):
        return None
    bundles = list(iter_bundles(data))
    if len(bundles) != 1 or bundles[0].start != 0:
        raise BundleFormatError(f"{path}: expected one offload bundle, found {len(bundles)}")
    b = bundles[0]
    keep = {None, gpu_target}
    if not any(e.gpu_target == gpu_target for e in b.entries):
        raise ValueError(f"{path} carries no device code for {gpu_target}")
    plain = bytearray(b.plain)
    dropped, zeroed = trim_plain(plain, 0, keep)
    if b.compressed:
        out = compress_bundle(bytes(plain), b.version, b.method)
        if not dropped and len(out) >= len(data):
            return TrimResult(1, 0, 0, 0, 0)
    else:
        out = bytes(plain)
    Path(path).write_bytes(out)
    return TrimResult(1, int(b.compressed), dropped, zeroed, max(0, len(data) - len(out)))


@dataclasses.dataclass(frozen=True)
class TrimResult:
    bundles: int
    compressed_bundles: int
    entries_dropped: int
    bytes_zeroed: int          # plain bundles: device code zeroed in place
    bytes_saved: int           # compressed bundles: how much smaller they became


def _fatbin_location(f) -> tuple[int, int] | None:
    """(file offset, size) of `.hip_fatbin`, or None."""
    section = ELFFile(f).get_section_by_name(".hip_fatbin")
    if section is None or section["sh_type"] == "SHT_NOBITS":
        return None
    return section["sh_offset"], section["sh_size"]


def trim_to_target(path: Path, gpu_target: str) -> TrimResult:
    """Keep only the host entry and `gpu_target`'s device code in every bundle of a fat binary, in place.

    Each bundle keeps its place (the host code points at bundle starts); the file
    keeps its size. The HIP runtime picks a code object by its id, so the dropped
    targets are simply absent.
    """
    with open(path, "rb") as f:
        found = _fatbin_location(f)
        if found is None:
            return TrimResult(0, 0, 0, 0, 0)
        base, size = found
        f.seek(base)
        data = bytearray(f.read(size))
    bundles = list(iter_bundles(data))
    targets = {e.gpu_target for b in bundles for e in b.entries if e.gpu_target}
    if gpu_target not in targets:
        raise ValueError(f"{path} carries no device code for {gpu_target} "
                         f"(it has {', '.join(sorted(targets)) or 'none'})")
    keep = {None, gpu_target}
    dropped = zeroed = saved = compressed = 0
    for b in bundles:
        device = [e for e in b.entries if e.gpu_target]
        if device and not any(e.gpu_target == gpu_target for e in device):
            raise ValueError(f"{path}: the bundle at {b.start:#x} of .hip_fatbin has code for "
                             f"{', '.join(sorted({e.gpu_target for e in device}))} but none for {gpu_target}; "
                             "its kernels would fail with 'invalid device function'")
        if not any(e.gpu_target not in keep for e in b.entries):
            if b.compressed:  # nothing to drop: only compress it harder, if that helps
                packed = compress_bundle(b.plain, b.version, b.method)
                if len(packed) < b.extent:
                    data[b.start:b.start + b.extent] = packed + bytes(b.extent - len(packed))
                    saved += b.extent - len(packed)
                    compressed += 1
            continue
        if not b.compressed:
            d, z = trim_plain(data, b.start, keep)
            dropped += d
            zeroed += z
            continue
        plain = bytearray(b.plain)
        d, _ = trim_plain(plain, 0, keep)
        packed = compress_bundle(bytes(plain), b.version, b.method)
        if len(packed) > b.extent:
            raise BundleFormatError(f"{path}: the trimmed bundle at {b.start:#x} compresses to {len(packed)} "
                                    f"bytes, more than its {b.extent}-byte place")
        data[b.start:b.start + b.extent] = packed + bytes(b.extent - len(packed))
        dropped += d
        saved += b.extent - len(packed)
        compressed += 1
    if len(data) != size:  # never write past the section
        raise BundleFormatError(f"{path}: trimming changed the size of .hip_fatbin ({size} -> {len(data)})")
    with open(path, "r+b") as f:
        f.seek(base)
        f.write(data)
    return TrimResult(len(bundles), compressed, dropped, zeroed, saved)
