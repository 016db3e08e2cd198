"""Find a Debian source package file through apt's own configuration.

Some upstream releases are reachable here only as Debian source packages (the
`.orig.tar.*` Debian keeps of the upstream release). The archive URIs come from
the apt sources of this machine and of the build root (one-line
sources.list files and deb822 .sources files), never from a host written here;
the file's place in the archive follows Debian's pool layout:

    <uri>/pool/<component>/<prefix>/<source package>/<file>

where <prefix> is the package's first letter, or "lib" plus the next letter
for lib* packages (libsdl2 -> pool/main/libs/libsdl2/).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

APT_SOURCES = ("etc/apt/sources.list", "etc/apt/sources.list.d")


def pool_path(package: str, filename: str, component: str = "main") -> str:
    prefix = package[:4] if package.startswith("lib") and len(package) > 3 else package[:1]
    return f"pool/{component}/{prefix}/{package}/{filename}"


def _one_line_uris(text: str) -> list[str]:
    uris = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        # deb [options] URI suite components  (deb-src lines name the same archives)
        m = re.match(r"^deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", line)
        if m:
            uris.append(m.group(1))
    return uris


def _deb822_uris(text: str) -> list[str]:
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        uris.extend(fields.get("uris", "").split())
    return uris


def archive_uris(roots: Iterable[Path] = (Path("/"),)) -> list[str]:
    """Archive URIs from the apt sources under each root, in order, without duplicates."""
    found: list[str] = []
    for root in roots:
        files: list[Path] = []
        main, parts = (Path(root) / p for p in APT_SOURCES)
        if main.is_file():
            files.append(main)
        if parts.is_dir():
            files += sorted(parts.glob("*.list")) + sorted(parts.glob("*.sources"))
        for f in files:
            if not f.is_file():  # a directory, a FIFO (reading it would block), a dangling link
                continue
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            uris = _deb822_uris(text) if f.suffix == ".sources" else _one_line_uris(text)
            for uri in uris:
                uri = uri.rstrip("/")
                if uri.startswith(("http://", "https://", "file:/")) and uri not in found:
                    found.append(uri)
    return found


def candidate_urls(package: str, filename: str, component: str, roots: Iterable[Path]) -> list[str]:
    return [f"{uri}/{pool_path(package, filename, component)}" for uri in archive_uris(roots)]
