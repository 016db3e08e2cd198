"""Which Debian package owns a library in a root: its version and copyright file."""

from __future__ import annotations
import functools
import logging
import re
from pathlib import Path
from builder.package.linkage import in_root_path, resolve_in_root


log = logging.getLogger(__name__)


class PackageDatabase:
    """dpkg's view of a root filesystem: owner, version and copyright of files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info = self.root / "var/lib/dpkg/info"

    @classmethod
    def for_root(cls, root: Path) -> "PackageDatabase | None":
        db = cls(root)
        return db if db.info.is_dir() else None

    @functools.cached_property
    def _owners(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        for lst in self.info.glob("*.list"):
            package = lst.stem.split(":", 1)[0]
            try:
                for line in lst.read_text(errors="replace").splitlines():
                    if line and line != "/.":
                        owners.setdefault(line, package)
            except OSError:
                continue
        return owners

    @functools.cached_property
    def _installed(self) -> dict[str, dict[str, str]]:
        """Package -> its fields in dpkg's status file (installed packages only)."""
        installed: dict[str, dict[str, str]] = {}
        status = self.root / "var/lib/dpkg/status"
        if not status.is_file():
            return installed
        for para in status.read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", para, flags=re.M))
            if "Package" in fields and "installed" in fields.get("Status", ""):
                installed.setdefault(fields["Package"], fields)
        return installed

    def owner(self, *paths: Path) -> str | None:
        """Package owning any of the files (host paths inside the root)."""
        candidates: list[str] = []
        for p in paths:
            inner = in_root_path(self.root, Path(p))
            candidates.append(inner)
            # merged /usr: dpkg may list /lib/... for a file reached as /usr/lib/... and back
            if inner.startswith("/usr/lib/"):
                candidates.append(inner[len("/usr"):])
            elif inner.startswith("/lib/"):
                candidates.append("/usr" + inner)
        for c in candidates:
            if c in self._owners:
                return self._owners[c]
        return None

    def version(self, package: str) -> str | None:
        return self._installed.get(package, {}).get("Version")

    def architecture(self, package: str) -> str | None:
        """amd64, all, ... (a package's purl names it)."""
        return self._installed.get(package, {}).get("Architecture")

    def copyright(self, package: str) -> Path | None:
        path = resolve_in_root(self.root, f"/usr/share/doc/{package}/copyright")
        return path if path.is_file() else None
