"""What a cached source tree holds, recorded when it is made and checked whenever it is used.

A tree under CACHE/sources/<component>-<key>/ gets `manifest.json` beside its
`src/` and `root` when it is made: every path below the entry with its type,
permission bits, and for a file its size, mtime and sha256; for a link its
target. Using the tree checks it against the manifest: a path missing or added,
another type, mode, size or link target is a difference; a file whose mtime
moved is hashed again (a copied cache keeps its trust, an edit of the same
size does not pass). The check costs a directory walk and one lstat per path,
not a read of every file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from builder.common.files import sha256_file, write_atomic
from builder.errors import FatalError

MANIFEST = "manifest.json"
VERSION = 1

Entry = list  # ["f", mode, size, mtime_ns, sha256] | ["d", mode] | ["l", target] | ["s", mode]


def _raise(error: OSError) -> None:
    raise error


def scan(top: Path, *, hashes: bool = True) -> dict[str, Entry]:
    """Every path below `top` (its manifest left out), in a stable order."""
    top = Path(top)
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top).replace(os.sep, "/")
            if rel == MANIFEST:
                continue
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ["l", os.readlink(path)]
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ["d", mode]
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = ["f", mode, st.st_size, st.st_mtime_ns, sha256_file(Path(path)) if hashes else None]
            else:
                entries[rel] = ["s", st.st_mode]
    return entries


def write(top: Path, entries: dict[str, Entry] | None = None) -> dict[str, Entry]:
    """Record what `top` holds now (or `entries`, scanned before) in top/manifest.json."""
    entries = scan(top) if entries is None else entries
    write_atomic(Path(top) / MANIFEST, json.dumps({"manifest_version": VERSION, "entries": entries},
                                                  separators=(",", ":")) + "\n",
                 doing="recording what a cached source tree holds")
    return entries


def read(top: Path) -> dict[str, Entry] | None:
    """The recorded entries, or None if the tree has no manifest (made by an older moshi-build).
    A manifest that does not parse is recorded as holding nothing: every path is then a difference."""
    path = Path(top) / MANIFEST
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        entries = data["entries"]
        if data.get("manifest_version") != VERSION or not isinstance(entries, dict):
            raise ValueError("unknown manifest")
        return entries
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}   # damaged (a nesting too deep to parse is damage too): every path is a difference


def _kind(entry: Entry) -> str:
    return {"f": "a file", "d": "a directory", "l": "a link", "s": "a special file"}.get(entry[0], "unknown")


def differences(top: Path, recorded: dict[str, Entry], current: dict[str, Entry] | None = None,
                *, compare_mtimes: bool = True) -> tuple[list[str], bool]:
    """(what differs between the tree and `recorded`, whether a recorded mtime is stale).

    With compare_mtimes=False both sides must carry hashes (two full scans)."""
    top = Path(top)
    current = scan(top, hashes=False) if current is None else current
    found: list[str] = []
    stale = False
    for rel in sorted(set(recorded) - set(current)):
        found.append(f"{rel} is missing")
    for rel in sorted(set(current) - set(recorded)):
        found.append(f"{rel} was added")
    for rel in sorted(set(recorded) & set(current)):
        old, new = recorded[rel], current[rel]
        if not isinstance(old, list) or not old or old[0] != new[0]:
            found.append(f"{rel} was {_kind(old) if isinstance(old, list) and old else 'unknown'}, "
                         f"is {_kind(new)} now")
        elif new[0] == "l" and old[1:] != new[1:]:
            found.append(f"{rel} links to {new[1]!r}, not {old[1]!r}")
        elif new[0] in ("d", "s") and old[1:] != new[1:]:
            found.append(f"{rel} changed mode")
        elif new[0] == "f":
            try:
                _, mode, size, mtime, digest = old
            except ValueError:
                found.append(f"{rel}: unreadable record")
                continue
            if mode != new[1]:
                found.append(f"{rel} changed mode ({mode:o} -> {new[1]:o})")
            elif size != new[2]:
                found.append(f"{rel} changed (size {size} -> {new[2]})")
            elif not compare_mtimes or mtime != new[3]:
                actual = new[4] if new[4] is not None else sha256_file(top / rel)
                if actual != digest:
                    found.append(f"{rel} changed (same size, other bytes)")
                elif compare_mtimes:
                    stale = True
    return found, stale


def refresh(top: Path, recorded: dict[str, Entry]) -> None:
    """Record new mtimes of files whose bytes were checked (best effort: a read-only cache is fine)."""
    current = scan(top, hashes=False)
    for rel, entry in current.items():
        if entry[0] == "f" and rel in recorded:
            entry[4] = recorded[rel][4]
    try:
        write(top, current)
    except (OSError, FatalError):  # only an optimisation
        pass
