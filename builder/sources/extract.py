"""Unpacking source archives without trusting them.

Tar archives go through the standard library's ``data`` extraction filter
(PEP 706): it refuses ``..`` escapes, links that point out of the
destination, and device or FIFO members, and it drops setuid bits and
group/other write permission. Absolute member names, which the filter would
quietly make relative, are refused here as well. Every member is checked
before anything is written, so a refused archive leaves nothing
half-extracted behind, and the filter runs again during extraction against
what is actually on disk.

``zipfile`` has no such filter, so zip members are checked here: every name
must stay inside the destination, and a symlink entry must point inside it
too. Symlinks are created after all files, so no file is ever written through
a link.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import os
import shutil
import stat
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from builder.errors import DiskFullError, RecipeError, ToolchainError, UnsafeArchiveError, shorten

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tbz")
_ZIP_SUFFIXES = (".zip",)


def _refuse(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"refusing to extract {archive}: member {member!r} {why}; "
        "the archive is not trusted, do not use it"
    )


def _disk_full(dest: Path) -> DiskFullError:
    return DiskFullError(
        f"no space left on the device holding {dest} while extracting; free some space "
        "(or point --cache-dir elsewhere) and run again"
    )


def _kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(_ZIP_SUFFIXES):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    # An unusual name (e.g. a --source override): look at the bytes.
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise UnsafeArchiveError(
        f"cannot extract {archive}: it is neither a tar (.tar, .tar.gz, .tgz, .tar.xz, "
        ".tar.bz2) nor a zip archive; the archive is not trusted, do not use it"
    )


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract ``archive`` (.tar, .tar.gz/.tgz, .tar.xz, .tar.bz2, .zip) into ``dest``.

    ``dest`` must be an existing, empty directory. An archive with a member
    that would land outside ``dest`` (or is a device file) raises
    :class:`UnsafeArchiveError` before anything is written; running out of
    space raises :class:`DiskFullError`.
    """
    archive = Path(archive)
    dest = Path(dest)
    if not dest.is_dir():
        raise ValueError(f"extraction directory {dest} does not exist")
    if any(dest.iterdir()):
        raise ValueError(f"extraction directory {dest} is not empty")
    kind = _kind(archive)
    try:
        if kind == "zip":
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
            gzip.BadGzipFile) as e:
        # A damaged stream found while extracting (bytes the sha256 did not vouch for: an override).
        raise UnsafeArchiveError(
            f"cannot read {archive} ({type(e).__name__}: {e}); the archive is damaged or not trusted, do not use it"
        ) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _disk_full(dest) from None
        raise


# -- tar ---------------------------------------------------------------------


def _describe_filter_error(e: tarfile.FilterError) -> str:
    if isinstance(e, tarfile.AbsolutePathError):
        return "has an absolute path"
    if isinstance(e, tarfile.OutsideDestinationError):
        return "would be written outside the extraction directory"
    if isinstance(e, tarfile.SpecialFileError):
        return "is a device file, FIFO or other special file"
    if isinstance(e, tarfile.AbsoluteLinkError):
        return f"is a link to the absolute path {e.tarinfo.linkname!r}"
    if isinstance(e, tarfile.LinkOutsideDestinationError):
        return f"is a link to {e.tarinfo.linkname!r}, outside the extraction directory"
    return str(e)


MAX_LINK_TEXT = 1024       # a source tree's links are short; CVE-2025-4517 needs names past PATH_MAX


def _link_walk_problem(rel: str, target: str, links: dict[str, str]) -> str | None:
    """Why the link at `rel` (relative to the root) pointing at `target` is refused, or None.

    Resolved one component at a time, as the kernel does: it may never climb above the root,
    nor pass through another link of the same archive (a chain of links, each inside on its own,
    can lead anywhere; Python's tar filter misses such a chain once realpath() passes PATH_MAX)."""
    if len(target) > MAX_LINK_TEXT or len(rel) > MAX_LINK_TEXT:
        return f"is a link with a name or target longer than {MAX_LINK_TEXT} characters"
    parts = [p for p in os.path.dirname(rel).split("/") if p not in ("", ".")]
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return f"is a link to {target!r}, which climbs out of the extraction directory"
            parts.pop()
            continue
        parts.append(comp)
        if "/".join(parts) in links:
            return f"is a link to {target!r}, which passes through the archive's link {'/'.join(parts)!r}"
    return None


def _check_links(archive: Path, links: dict[str, str]) -> None:
    """links: member name (normalised, relative) -> its link target."""
    for rel, target in links.items():
        problem = _link_walk_problem(rel, target, links)
        if problem:
            raise _refuse(archive, rel, problem)


def _extract_tar(archive: Path, dest: Path) -> None:
    if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4 (builder.check_python refuses it first)
        raise ToolchainError(f"extracting archives safely needs Python 3.11.4 or newer (tarfile filters); "
                             f"this is {sys.version.split()[0]}: run moshi-build with a newer Python")
    root = os.path.realpath(dest)
    try:
        with tarfile.open(archive, "r:*") as tf:
            tf.errorlevel = 1  # filter refusals and extraction errors raise, never just log
            members = tf.getmembers()
            # Check everything first so a refused archive writes nothing.
            for member in members:
                # The data filter would strip a leading "/" and extract the member
                # inside; an absolute name in a source archive is refused instead.
                if member.name.startswith(("/", os.sep)):
                    raise _refuse(archive, member.name, "has an absolute path")
                tarfile.data_filter(member, root)
            # a hard link names a member before it (tarfile raises KeyError otherwise); a link
            # named "x/." or "x/.." is itself a folder of the tree (tarfile recurses on it)
            regular = set()
            for member in members:
                if member.islnk() and os.path.normpath(member.linkname) not in regular:
                    raise _refuse(archive, member.name, f"is a hard link to {shorten(repr(member.linkname))}, "
                                  "which is not a file before it in the archive")
                if (member.issym() or member.islnk()) and os.path.basename(member.name.rstrip("/")) in (".", ".."):
                    raise _refuse(archive, member.name, "is a link named like a folder ('.' or '..')")
                if member.isfile() or member.islnk():
                    regular.add(os.path.normpath(member.name))
            # symlinks: resolved through the archive's own links, not by realpath() alone
            _check_links(archive, {os.path.normpath(m.name): m.linkname for m in members if m.issym()})
            tf.extractall(root, members=members, filter="data")
    except tarfile.FilterError as e:
        raise _refuse(archive, e.tarinfo.name, _describe_filter_error(e)) from None
    except (tarfile.ReadError, tarfile.CompressionError, EOFError) as e:
        raise UnsafeArchiveError(
            f"cannot read {archive} as a tar archive ({e}); the archive is not trusted, do not use it"
        ) from None


# -- zip ---------------------------------------------------------------------


def _zip_mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _zip_target(archive: Path, root: str, name: str) -> tuple[str, str]:
    """Return (normalised relative name, absolute path) for a member, or refuse it."""
    if "\x00" in name:
        raise _refuse(archive, name, "has a NUL byte in its name")
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, name, "has an absolute path")
    rel = os.path.normpath(name)
    full = os.path.normpath(os.path.join(root, rel))
    if not _inside(root, full):
        raise _refuse(archive, name, "would be written outside the extraction directory")
    return rel, full


def _extract_zip(archive: Path, dest: Path) -> None:
    root = os.path.realpath(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError) as e:
        raise UnsafeArchiveError(
            f"cannot read {archive} as a zip archive ({e}); the archive is not trusted, do not use it"
        ) from None
    with zf:
        plan: list[tuple[zipfile.ZipInfo, str, str]] = []
        links: dict[str, tuple[zipfile.ZipInfo, str, str]] = {}
        # Check every member before writing anything.
        for info in zf.infolist():
            rel, full = _zip_target(archive, root, info.filename)
            if rel == ".":
                continue
            mode = _zip_mode(info)
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "surrogateescape")
                if os.path.isabs(target) or "\x00" in target:
                    raise _refuse(archive, info.filename, f"is a link to the absolute path {target!r}")
                resolved = os.path.normpath(os.path.join(os.path.dirname(full), target))
                if not _inside(root, resolved):
                    raise _refuse(
                        archive, info.filename, f"is a link to {target!r}, outside the extraction directory"
                    )
                links[rel] = (info, full, target)
            elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _refuse(archive, info.filename, "is a device file, FIFO or other special file")
            else:
                plan.append((info, rel, full))
        _check_links(archive, {r: t for r, (_i, _f, t) in links.items()})
        # No member may be written through a link of the same archive.
        for info, rel, _full in plan + [(i, r, f) for r, (i, f, _t) in links.items()]:
            parent = os.path.dirname(rel)
            while parent:
                if parent in links:
                    raise _refuse(archive, info.filename, f"would be written through the link {parent!r}")
                parent = os.path.dirname(parent)

        for info, _rel, full in plan:
            mode = _zip_mode(info)
            if info.is_dir() or stat.S_ISDIR(mode):
                os.makedirs(full, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if os.path.lexists(full) and (os.path.islink(full) or os.path.isdir(full)):
                raise _refuse(archive, info.filename, "would replace a directory or link of the archive")
            with zf.open(info) as src, open(full, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            # Like tar's data filter: keep the owner's bits, never group/other write or setuid.
            perm = 0o644 | (0o111 if mode & 0o100 else 0)
            os.chmod(full, perm)
        for rel, (info, full, target) in links.items():
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if os.path.lexists(full):
                raise _refuse(archive, info.filename, "is a link that would replace another member")
            os.symlink(target, full)


# -- the source root -----------------------------------------------------------


def _listing(directory: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    if not names:
        return "nothing"
    shown = ", ".join(names[:20])
    return shown + (f" (and {len(names) - 20} more)" if len(names) > 20 else "")


def source_root(extracted: Path, subdirectory: str | None) -> Path:
    """Return the directory of an extracted archive that holds the source.

    With ``subdirectory`` (from the recipe) that directory, which must exist.
    Without it, the single top-level directory if the archive has exactly one
    top-level entry and it is a directory (the usual ``name-version/``
    layout); otherwise ``extracted`` itself.
    """
    extracted = Path(extracted)
    if subdirectory:
        pure = PurePosixPath(subdirectory)
        if pure.is_absolute() or ".." in pure.parts:
            raise RecipeError(
                f"source subdirectory {subdirectory!r} must be a relative path inside the archive"
            )
        root = extracted / subdirectory
        if not root.is_dir() or not _inside(os.path.realpath(extracted), os.path.realpath(root)):
            # Name the deepest part that does exist, and what it holds.
            found = extracted
            for part in pure.parts:
                if not (found / part).is_dir():
                    break
                found = found / part
            where = "the archive's top level" if found == extracted else f"{found.relative_to(extracted)}/"
            raise RecipeError(
                f"source subdirectory {subdirectory!r} is not in the extracted archive; "
                f"{where} has: {_listing(found)}; fix 'subdirectory' in the recipe"
            )
        return root
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return extracted
