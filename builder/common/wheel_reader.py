"""Reads a built wheel in one pass: sizes, modes, tags and the dynamic section of every ELF member.

The one reader of built wheels: `moshi-build verify` (check/verify.py), the size
report (check/sizes.py) and the packaging step after auditwheel's repair
(package/wheel.py, package/sbom.py) all read through inspect_wheel(). It lives in
common/ because both stages use it, and imports nothing of either (only the ELF
facts of common/elfinfo.py); auditwheel's naming of grafted files lives here,
both ways (grafted_name, built_name).
"""

from __future__ import annotations
import base64
import contextlib
import csv
import dataclasses
import errno
import hashlib
import lzma
import posixpath
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from builder.errors import NotAWheelError, shorten
from builder.common import elfinfo
from builder.common.elfinfo import read_elf


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
    problems: list[str] = dataclasses.field(default_factory=list)   # why pip would not install it as read

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


# Bounds on one member: its declared size, and its size over its compressed size (deflate
# cannot pass about 1032; a larger ratio is a bomb or a lying header).
MAX_MEMBER_SIZE = 4 << 30
MAX_RATIO = 1100
_RATIO_FROM = 1 << 20          # members smaller than this are not judged by their ratio
_CHUNK = 1 << 22
_RECORD_HASHES = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b", "blake2s"})
# What zipfile raises for bytes that are not a (whole) zip archive.
def plausible_elf(head: bytes, size: int) -> bool:
    """An ELF header that could be real: magic, class, byte order, version, and its section
    table inside the member (a member of zeros behind the magic is not written to disk)."""
    import struct as _struct

    if len(head) < 64 or head[:4] != elfinfo.ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2) \
            or head[6] != 1:
        return False
    order = "<" if head[5] == 1 else ">"
    if head[4] == 2:
        shoff, = _struct.unpack_from(order + "Q", head, 40)
        shentsize, shnum = _struct.unpack_from(order + "HH", head, 58)
    else:
        shoff, = _struct.unpack_from(order + "I", head, 32)
        shentsize, shnum = _struct.unpack_from(order + "HH", head, 46)
    return shoff + shentsize * shnum <= size


# RuntimeError: a member flagged as encrypted ("File ... is encrypted, password required").
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, struct.error,
               ValueError, OverflowError, UnicodeDecodeError, RuntimeError)


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is not to be read (None: it may be): an absurd declared size or compression
    ratio (a bomb or a lying header). Every reader of a wheel's members asks this first."""
    if info.file_size > MAX_MEMBER_SIZE:
        return (f"declares {info.file_size:,} bytes, over the {MAX_MEMBER_SIZE >> 30} GiB a member may "
                "have: not read")
    if info.file_size >= _RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return (f"would grow {info.file_size // max(info.compress_size, 1):,} times when unpacked "
                f"(at most {MAX_RATIO} is sane): not read")
    return None


def unsafe_name(name: str) -> str | None:
    """Why pip would not install the member `name` where its name says (None: it would)."""
    if not name or name == "/":
        return "an empty name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "a path with a '..' component (it would land outside the install tree)"
    if "\0" in name:
        return "a name with a NUL byte"
    return None


def _not_a_wheel(path: Path, why: str) -> NotAWheelError:
    return NotAWheelError(f"{shorten(path)} is not a wheel: {why}; give the .whl file that the build wrote "
                          "(a damaged download: fetch or build it again)")


@contextlib.contextmanager
def open_wheel(path: Path):
    """The wheel as a ZipFile; NotAWheelError (one line) for a name, directory or archive that is not one."""
    path = Path(path)
    try:
        parse_wheel_filename(path.name)
    except InvalidWheelFilename as e:
        raise _not_a_wheel(path, f"its name is not a wheel file name ({shorten(e, 120)})") from None
    if path.is_dir():
        raise _not_a_wheel(path, "it is a directory")
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise _not_a_wheel(path, f"not a readable zip archive ({type(e).__name__}: {shorten(e, 120)})") from None
    with zf:
        yield zf


def _record_digest(algorithm: str, digest: bytes) -> str:
    return f"{algorithm}=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _read_record(data: bytes, member: str, problems: list[str]) -> dict[str, tuple[str, str]] | None:
    """RECORD's rows: path -> (hash, size), or None (a problem noted) when it cannot be read."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{member} is not readable ({shorten(e, 80)})")
        return None
    return parse_record(text, member, problems)


def parse_record(text: str, member: str, problems: list[str]) -> dict[str, tuple[str, str]] | None:
    """RECORD's rows (text): path -> (hash, size), or None (a problem noted, one line) when it
    cannot be parsed, e.g. a field longer than csv's limit. Every reader of RECORD parses it here."""
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as e:
        problems.append(f"{member} is not readable ({shorten(e, 80)})")
        return None
    entries: dict[str, tuple[str, str]] = {}
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            problems.append(f"{member} has a row of {len(row)} fields, not 3 (path,hash,size): {shorten(row, 80)}")
            continue
        if row[0] in entries:
            problems.append(f"{member} lists {shorten(row[0], 80)} twice")
        entries[row[0]] = (row[1], row[2])
    return entries


def _compare_record(record: dict[str, tuple[str, str]], record_member: str, names: list[str],
                    sizes: dict[str, int], digests: dict[str, dict[str, str]], problems: list[str]) -> None:
    """What pip checks of RECORD against the archive (and what `installer` refuses)."""
    folder = posixpath.dirname(record_member)
    unsigned = {record_member, f"{folder}/RECORD.jws", f"{folder}/RECORD.p7s"}
    listed = set(record)
    for name in names:
        if name not in listed and name not in unsigned:
            problems.append(f"{shorten(name, 120)} is not listed in {record_member}")
    present = set(names)
    for name, (digest, size) in record.items():
        if name not in present:
            problems.append(f"{record_member} lists {shorten(name, 120)}, which is not in the wheel")
            continue
        if name in unsigned or name not in sizes:      # a member too large to read is named already
            continue
        algorithm, _, value = digest.partition("=")
        if not value:
            problems.append(f"{record_member} gives no hash for {shorten(name, 120)}")
        elif algorithm not in _RECORD_HASHES:
            problems.append(f"{record_member} hashes {shorten(name, 120)} with {shorten(algorithm, 40)}, "
                            "not sha256 or stronger")
        elif name in digests and digests[name].get(algorithm) != digest:
            problems.append(f"{shorten(name, 120)} does not match its {algorithm} in {record_member}")
        if size and size != str(sizes[name]):
            problems.append(f"{shorten(name, 120)} is {sizes[name]} bytes, but {record_member} says "
                            f"{shorten(size, 40)}")


def inspect_wheel(path: Path, elf: bool = True, *,
                  scan: Callable[[str, bytes], None] | None = None,
                  examine: Callable[[str, Path, elfinfo.ElfInfo], None] | None = None,
                  strict: bool = False, max_elf_size: int | None = None) -> WheelReport:
    """Sizes (installed and compressed), modes, tags and (elf=True) the dynamic section of every ELF member.

    One pass over the archive, nothing installed: scan(member, chunk) sees the
    bytes of every member in order (chunks of a few MB); examine(member, file,
    facts) is called for each ELF member while it sits extracted in `file`.

    The wheel is read the way pip installs it: members that are symbolic links, or whose
    names are absolute or climb out with '..', are left out of files and named in
    report.problems, and so is a member whose declared size or compression ratio is absurd
    (it is not read). strict=True also reads every member to check it against RECORD (missing,
    unlisted, wrong hash or size: report.problems). max_elf_size: an ELF member larger than this
    is not written out to be examined (named in report.problems). A file that is not a wheel at
    all raises NotAWheelError.
    """
    path = Path(path)
    try:
        name, version, build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as e:
        raise _not_a_wheel(path, f"its name is not a wheel file name ({shorten(e, 120)})") from None
    if path.is_dir():
        raise _not_a_wheel(path, "it is a directory")
    try:
        return _read(path, tags, elf, scan, examine, strict, max_elf_size)
    except _ZIP_ERRORS as e:
        raise _not_a_wheel(path, f"not a readable zip archive ({type(e).__name__}: {shorten(e, 120)})") from None
    except OSError as e:
        if e.errno in (errno.EINVAL, None) and e.filename is None:      # a seek to a negative offset: damaged
            raise _not_a_wheel(path, f"not a readable zip archive ({shorten(e, 120)})") from None
        raise


def _read(path: Path, tags, elf: bool, scan, examine, strict: bool, max_elf_size: int | None = None) -> WheelReport:
    # ELF members are extracted one at a time to the system's temporary directory (never beside
    # the wheel: its folder may be read-only); a sizes-only read extracts nothing.
    extracts = elf or scan is not None
    with zipfile.ZipFile(path) as zf, (tempfile.TemporaryDirectory(prefix="inspect-") if extracts
                                       else contextlib.nullcontext("")) as tmp:
        reading = _Pass(zf, Path(tmp) / "member", elf, scan, examine, strict, max_elf_size)
        for info in reading.installable_members():
            reading.read_member(info)
        if strict:
            reading.check_record()
    files = reading.files
    return WheelReport(path, path.stat().st_size, sum(files.values()), files, reading.modes,
                       sorted(str(t) for t in tags), reading.elves, reading.compressed, reading.problems)


class _Pass:
    """One pass over an open archive: what it holds (files, modes, ELF facts) and what pip would refuse."""

    def __init__(self, zf: zipfile.ZipFile, target: Path, elf: bool, scan, examine, strict: bool,
                 max_elf_size: int | None = None) -> None:
        self.zf, self.target = zf, target            # target: where an ELF member sits while examined
        self.max_elf_size = max_elf_size             # the largest ELF member written out to be examined
        self.elf, self.scan, self.examine, self.strict = elf, scan, examine, strict
        self.reads = elf or scan is not None or strict
        self.files: dict[str, int] = {}
        self.compressed: dict[str, int] = {}
        self.modes: dict[str, int] = {}
        self.elves: dict[str, elfinfo.ElfInfo] = {}
        self.problems: list[str] = []
        self.names: list[str] = []                   # every file member, as the archive lists it
        self.digests: dict[str, dict[str, str]] = {}
        self.record_data: dict[str, bytes] = {}
        self.infos = zf.infolist()
        dist_infos = sorted({i.filename.split("/", 1)[0] for i in self.infos
                             if "/" in i.filename and i.filename.split("/", 1)[0].endswith(".dist-info")})
        self.record_member = f"{dist_infos[0]}/RECORD" if len(dist_infos) == 1 else None
        if len(dist_infos) > 1:
            self.problems.append(f"the wheel has {len(dist_infos)} .dist-info folders ({', '.join(dist_infos[:3])}); "
                                 "pip needs exactly one")

    def installable_members(self):
        """The file members pip would install, in archive order; the others are named in problems."""
        seen = set()
        for info in self.infos:
            member = info.filename
            why = unsafe_name(member)
            if why:
                self.problems.append(f"{shorten(member, 120)} is {why}: pip refuses to install the wheel")
                continue
            if info.is_dir():
                continue
            if member in seen:
                self.problems.append(f"{shorten(member, 120)} is in the archive twice")
                continue
            seen.add(member)
            if stat.S_IFMT(info.external_attr >> 16) == stat.S_IFLNK:
                self.problems.append(f"{shorten(member, 120)} is a symbolic link: pip installs it as a small text "
                                     "file, so it stands for no file of the wheel")
                continue
            self.names.append(member)
            if not self._sane_size(info):
                continue
            self.files[member] = info.file_size
            self.compressed[member] = info.compress_size
            self.modes[member] = (info.external_attr >> 16) & 0o7777
            yield info

    def _sane_size(self, info: zipfile.ZipInfo) -> bool:
        """A member of absurd declared size or compression ratio is named, not read."""
        why = member_problem(info)
        if why:
            self.problems.append(f"{shorten(info.filename, 120)} {why}")
            return False
        return True

    def read_member(self, info: zipfile.ZipInfo) -> None:
        """Stream one member: to scan, to its sha256 (strict), to RECORD's copy, to a file if it is ELF."""
        if not self.reads:
            return
        member = info.filename
        is_record = member == self.record_member
        with self.zf.open(info) as src:
            chunk = src.read(64)
            is_elf = self.elf and plausible_elf(chunk, info.file_size)
            if is_elf and self.max_elf_size is not None and info.file_size > self.max_elf_size:
                self.problems.append(f"{shorten(member, 120)} is an ELF file of {info.file_size:,} bytes, over the "
                                     f"{self.max_elf_size:,} verify writes out to examine (its max_elf_extract "
                                     "setting): not examined")
                is_elf = False
            if not is_elf and self.scan is None and not self.strict:
                return
            hasher = hashlib.sha256() if self.strict and not is_record else None
            kept = bytearray() if is_record else None
            with (open(self.target, "wb") if is_elf else contextlib.nullcontext()) as dst:
                while chunk:
                    if self.scan is not None:
                        self.scan(member, chunk)
                    if dst is not None:
                        dst.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    if kept is not None and len(kept) <= _CHUNK * 4:
                        kept.extend(chunk)
                    chunk = src.read(_CHUNK)
            if hasher is not None:
                self.digests[member] = {"sha256": _record_digest("sha256", hasher.digest())}
            if kept is not None:
                self.record_data[member] = bytes(kept)
        if is_elf:
            self._examine_elf(member)

    def _examine_elf(self, member: str) -> None:
        facts = read_elf(self.target)
        if facts is not None:
            self.elves[member] = dataclasses.replace(facts, path=Path(member))
            if self.examine is not None:
                self.examine(member, self.target, self.elves[member])
        self.target.unlink()

    def check_record(self) -> None:
        """RECORD against the archive, as pip and `installer` check it."""
        record_member = self.record_member
        if record_member is None or record_member not in self.files:
            self.problems.append(f"the wheel has no {record_member or '<name>-<version>.dist-info/RECORD'}: "
                                 "pip cannot install or uninstall it")
            return
        record = _read_record(self.record_data.get(record_member, b""), record_member, self.problems)
        if record is None:
            return
        # A stronger hash than sha256 in RECORD: hash that member again with it.
        for m, (digest, _) in record.items():
            algorithm = digest.partition("=")[0]
            if m in self.digests and algorithm in _RECORD_HASHES and algorithm != "sha256":
                h = hashlib.new(algorithm)
                with self.zf.open(m) as src:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        h.update(chunk)
                self.digests[m][algorithm] = _record_digest(algorithm, h.digest())
        _compare_record(record, record_member, self.names, self.files, self.digests, self.problems)
