"""Are two wheels the same bytes, and if not, where do they first differ?

`moshi-build compare A B` and `moshi-build all --check-reproducible` (which
rebuilds the wheels from the cache into a second folder) use this. Equal
sha256 ends it. Otherwise the archives are walked in order, from what a user
would care about most to least:

  members      a member only in one wheel, or the same members in another order
  metadata     a member's timestamp, permissions, compression method or extra field
  content      a member's bytes: the first differing offset, and for an ELF file
               the section that holds it (.dynstr, .hip_fatbin, ...)
  container    same members, same metadata, same contents, yet other archive bytes
               (another compression level or zlib): the first differing offset of
               the files themselves and the member whose record holds it
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zipfile
from pathlib import Path

from builder.common.files import sha256_file
from builder.errors import shorten

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Difference:
    kind: str                  # members | metadata | content | container
    member: str | None         # the member inside the wheel (None: the archive itself)
    offset: int | None = None  # byte offset inside the member (content) or the file (container)
    detail: str = ""

    def line(self) -> str:
        where = f" {self.member}" if self.member else ""
        at = f" at byte {self.offset:,}" if self.offset is not None else ""
        return f"first difference ({self.kind}){where}{at}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    a: Path
    b: Path
    sha256_a: str
    sha256_b: str
    difference: Difference | None

    @property
    def identical(self) -> bool:
        return self.sha256_a == self.sha256_b

    def line(self) -> str:
        if self.identical:
            return f"{self.a.name}: identical (sha256 {self.sha256_a})"
        return (f"{self.a.name}: DIFFERS (sha256 {self.sha256_a[:16]}… in {self.a.parent}, "
                f"{self.sha256_b[:16]}… in {self.b.parent}); "
                + (self.difference.line() if self.difference else "no member-level difference found"))


def compare_wheels(a: Path, b: Path) -> Comparison:
    """Compare two wheel files (zip archives); NotAWheelError for what is not one (reader's rules)."""
    from builder.common.wheel_reader import open_wheel

    sha_a, sha_b = sha256_file(a), sha256_file(b)
    if sha_a == sha_b:
        return Comparison(a, b, sha_a, sha_b, None)
    with open_wheel(a) as za, open_wheel(b) as zb:
        difference = _first_difference(za, zb, a, b)
    return Comparison(a, b, sha_a, sha_b, difference)


_METADATA = (("date_time", "timestamp"), ("external_attr", "permissions"), ("compress_type", "compression method"),
             ("flag_bits", "flag bits"), ("extra", "extra field"), ("comment", "comment"),
             ("create_system", "creating system"), ("create_version", "zip version made by"),
             ("extract_version", "zip version needed"), ("internal_attr", "internal attributes"),
             ("volume", "disk number"))


def _first_difference(za: zipfile.ZipFile, zb: zipfile.ZipFile, a: Path, b: Path) -> Difference | None:
    infos_a, infos_b = za.infolist(), zb.infolist()
    names_a, names_b = [i.filename for i in infos_a], [i.filename for i in infos_b]
    if set(names_a) != set(names_b):
        only_a, only_b = set(names_a) - set(names_b), set(names_b) - set(names_a)
        first = next(n for n in names_a + names_b if n in only_a or n in only_b)
        side = a.parent if first in only_a else b.parent
        return Difference("members", first, detail=f"only in the wheel in {side} "
                          f"({len(only_a)} member(s) only in {a.parent}, {len(only_b)} only in {b.parent})")
    if names_a != names_b:
        index = next(i for i, (x, y) in enumerate(zip(names_a, names_b)) if x != y)
        return Difference("members", names_a[index],
                          detail=f"member {index} is {names_a[index]} in {a.parent} but {names_b[index]} in {b.parent} "
                                 "(same members, another order)")
    for ia, ib in zip(infos_a, infos_b):
        for field, label in _METADATA:
            va, vb = getattr(ia, field), getattr(ib, field)
            if va != vb:
                return Difference("metadata", ia.filename, detail=f"{label} {_show(field, va)} vs {_show(field, vb)}")
        if ia.CRC != ib.CRC or ia.file_size != ib.file_size:
            return _content_difference(za, zb, ia, ib, a, b)
    if za.comment != zb.comment:
        return Difference("container", None, detail=f"archive comment {za.comment!r} vs {zb.comment!r}")
    offset = _first_differing_file_offset(a, b)
    holder = _member_holding(a, infos_a, offset) if offset is not None else None
    return Difference("container", holder, offset,
                      "every member has the same bytes and metadata, the archives differ "
                      "(compression level or zlib version)" + (f"; the byte is in the record of {holder}" if holder else ""))


def _content_difference(za: zipfile.ZipFile, zb: zipfile.ZipFile, ia: zipfile.ZipInfo, ib: zipfile.ZipInfo,
                        a: Path, b: Path) -> Difference:
    """Where a member's bytes differ, read as verify reads them: a member of absurd size or
    ratio (a bomb), an encrypted or unreadable one is a one-line difference, never read whole."""
    from builder.common.wheel_reader import _ZIP_ERRORS, member_problem

    name = ia.filename
    for info, where in ((ia, a.parent), (ib, b.parent)):
        why = member_problem(info)
        if why is None and info.flag_bits & 0x1:
            why = "is encrypted (zip's flag bit 0): not read"
        if why:
            return Difference("content", name, detail=f"cannot be compared: in {where} it {why}")
    try:
        offset = _first_differing_offset(za, zb, name)
        return Difference("content", name, offset, _content_detail(za, zb, name, offset, ia.file_size, ib.file_size))
    except _ZIP_ERRORS as e:
        return Difference("content", name, detail=f"cannot be compared: not readable "
                                                  f"({type(e).__name__}: {shorten(e, 120)})")


def _show(field: str, value) -> str:
    if field == "external_attr":
        return oct(value >> 16)
    if field == "date_time":
        return "%04d-%02d-%02d %02d:%02d:%02d" % value
    return repr(value)


def _first_differing_byte(fa, fb) -> int | None:
    """The offset of the first byte where two readable streams differ (None: equal)."""
    offset = 0
    while True:
        ca, cb = fa.read(CHUNK), fb.read(CHUNK)
        if ca != cb:
            return offset + next((i for i, (x, y) in enumerate(zip(ca, cb)) if x != y), min(len(ca), len(cb)))
        if not ca:
            return None
        offset += len(ca)


def _first_differing_offset(za: zipfile.ZipFile, zb: zipfile.ZipFile, name: str) -> int:
    with za.open(name) as fa, zb.open(name) as fb:
        offset = _first_differing_byte(fa, fb)
    return offset if offset is not None else 0


def _content_detail(za: zipfile.ZipFile, zb: zipfile.ZipFile, name: str, offset: int, size_a: int, size_b: int) -> str:
    sizes = f"{size_a:,} vs {size_b:,} bytes" if size_a != size_b else f"both {size_a:,} bytes"
    section = _elf_section_at(za, name, offset)
    where = f", in ELF section {section}" if section else ""
    digests = []
    for z in (za, zb):
        h = hashlib.sha256()
        with z.open(name) as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        digests.append(h.hexdigest()[:16])
    return f"{sizes}{where} (sha256 {digests[0]}… vs {digests[1]}…)"


# The most of a member's section table (and of a section name) read to name the section that
# holds a difference: ours have at most a few hundred sections (64 bytes each).
MAX_SECTION_TABLE = 1 << 20
_SHT_NOBITS = 8


def _elf_section_at(z: zipfile.ZipFile, name: str, offset: int) -> str | None:
    """The name of the ELF section (or program/section header table) holding file offset `offset`.
    Only the ELF header, the section table (at most MAX_SECTION_TABLE bytes) and one name are
    read, by seeking in the member's stream: never the member whole."""
    with z.open(name) as f:
        head = f.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
            return None
        order = "<" if head[5] == 1 else ">"
        wide = head[4] == 2
        try:
            if wide:
                phoff, shoff = struct.unpack_from(order + "QQ", head, 32)
                ehsize, phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(order + "6H", head, 52)
            else:
                phoff, shoff = struct.unpack_from(order + "II", head, 28)
                ehsize, phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(order + "6H", head, 40)
        except struct.error:
            return None
        if offset < ehsize:
            return "ELF header"
        if phoff <= offset < phoff + phnum * phentsize:
            return "program headers"
        if shoff <= offset < shoff + shnum * shentsize:
            return "section headers"
        if not shnum or shentsize < (64 if wide else 40) or shnum * shentsize > MAX_SECTION_TABLE:
            return None
        try:
            f.seek(shoff)
            table = f.read(shnum * shentsize)
            if len(table) < shnum * shentsize:
                return None
            layout = order + ("IIQQQQ" if wide else "IIIIII")
            sections = [struct.unpack_from(layout, table, i * shentsize) for i in range(shnum)]
            holder = next((sh for sh in sections if sh[1] != _SHT_NOBITS and sh[4] <= offset < sh[4] + sh[5]), None)
            if holder is None:
                return "between sections"
            if shstrndx >= shnum:
                return "(unnamed section)"
            f.seek(sections[shstrndx][4] + holder[0])
            raw = f.read(256).split(b"\0", 1)[0]
        except (OSError, ValueError, EOFError, struct.error):
            return None
    return raw.decode("ascii", "replace") or "(unnamed section)"


def _first_differing_file_offset(a: Path, b: Path) -> int | None:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return _first_differing_byte(fa, fb)


def _member_holding(path: Path, infos: list[zipfile.ZipInfo], offset: int) -> str | None:
    """The member whose local header + data (+ data descriptor) span holds `offset` (None: the
    central directory). The local header's own name and extra lengths count, not the central
    directory's (they may differ)."""
    holder = None
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset <= offset:
            holder = info
    if holder is None:
        return None
    with open(path, "rb") as f:
        f.seek(holder.header_offset + 26)
        lengths = f.read(4)
    if len(lengths) < 4:
        return None
    name_len, extra_len = int.from_bytes(lengths[:2], "little"), int.from_bytes(lengths[2:], "little")
    descriptor = 16 if holder.flag_bits & 0x08 else 0
    end = holder.header_offset + 30 + name_len + extra_len + holder.compress_size + descriptor
    return holder.filename if offset < end else None


def compare_folders(a: Path, b: Path) -> list[Comparison]:
    """Each wheel of folder `a` against the one of the same name in `b` (ConfigurationError if missing)."""
    from builder.errors import ConfigurationError

    names_a = sorted(p.name for p in Path(a).glob("*.whl"))
    names_b = sorted(p.name for p in Path(b).glob("*.whl"))
    if not names_a:
        raise ConfigurationError(f"{a}: no wheels (*.whl) to compare")
    if names_a != names_b:
        only = sorted(set(names_a) ^ set(names_b))
        raise ConfigurationError(f"{a} and {b} hold different wheel files ({', '.join(only)}); "
                                 "a different name is a different version or tag: compare the same builds")
    return [compare_wheels(Path(a) / n, Path(b) / n) for n in names_a]
