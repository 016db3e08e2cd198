"""The kind of a wheel, and the base wheel a target wheel is checked with (docs/WHEEL-PAIR.md).

  wheel_kind       "target" (<folder>/_target.json says so), "base" (<package>/_runtime.json
                   says "kind": "base") or "wheel" (self-contained), with the record read
  find_base_wheel  the base wheel of a target wheel's version beside it
  pair_with_base   the base-wheel check: the base fits the target wheel (name, kind, version)
  BaseWheel        the base wheel read, as the checks of a target wheel see it

A base wheel serves every target wheel verified after it: the last two wheels read as a base
stay in memory (the base cache), keyed by their path, size, time and the build-path needles.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from builder.check.names import folder_of, same_version
from builder.check.results import CheckResult, counted
from builder.check.settings import MAX_ELF_EXTRACT
from builder.check.wheel_contents import WheelContents, read_wheel
from builder.package.rules import RuntimeSpec


@dataclasses.dataclass
class BaseWheel:
    """The base wheel a target wheel is checked with."""
    path: Path
    contents: WheelContents
    info: dict
    info_member: str
    how: str                              # "beside it" or "given"

    @property
    def distribution(self) -> str:
        return str(self.info.get("distribution") or parse_wheel_filename(self.path.name)[0])

    @property
    def version(self) -> str:
        return str(self.info.get("version") or parse_wheel_filename(self.path.name)[1])

    @property
    def libs_dir(self) -> str | None:
        return self.contents.report.libs_dir

    @property
    def bin_dir(self) -> str:
        """Where the base keeps the libraries target wheels link: moshi_rocm/bin."""
        package = self.info.get("package") or self.info_member.split("/", 1)[0]
        return f"{package}/{self.info.get('bin_dir', 'bin')}"

    @property
    def provides(self) -> frozenset[str]:
        provides = self.info.get("provides")
        return frozenset(p for p in provides if isinstance(p, str)) if isinstance(provides, list) else frozenset()

    def summary(self) -> dict:
        return {"wheel": self.path.name, "version": self.version}


def runtime_info(contents: WheelContents, package: str) -> tuple[dict | None, str | None]:
    """(<package>/_runtime.json, or the first other _runtime.json, parsed or None; its member)."""
    candidates = [f"{package}/_runtime.json"] + sorted(m for m in contents.texts if m.endswith("/_runtime.json"))
    for member in candidates:
        if member in contents.texts:
            try:
                return json.loads(contents.texts[member]), member
            except ValueError:
                return None, member
    return None, None


def wheel_kind(contents: WheelContents, package: str) -> tuple[str, dict | None, str | None]:
    """("target", its _target.json, member) for a target wheel, ("base", ...) for a base wheel,
    ("wheel", <package>/_runtime.json or None, member) for a self-contained one (docs/WHEEL-PAIR.md)."""
    for member in sorted(m for m in contents.texts if m.endswith("/_target.json") and m.count("/") == 1):
        try:
            data = json.loads(contents.texts[member])
        except ValueError:
            return "target", None, member
        if isinstance(data, dict) and data.get("kind") == "target":
            return "target", data, member
    info, member = runtime_info(contents, package)
    if isinstance(info, dict) and info.get("kind") == "base":
        return "base", info, member
    return "wheel", info, member


def find_base_wheel(target_wheel: Path, base: str, version: str) -> Path | None:
    """The base wheel beside a target wheel: <normalized base>-<version>-*.whl in the same folder
    (of those, the one with the target wheel's platform tag first)."""
    found = []
    for candidate in sorted(Path(target_wheel).parent.glob("*.whl")):
        try:
            name, found_version = parse_wheel_filename(candidate.name)[:2]
        except InvalidWheelFilename:
            continue
        if name == canonicalize_name(base) and same_version(found_version, version):
            found.append(candidate)
    own = set(parse_wheel_filename(Path(target_wheel).name)[3])
    found.sort(key=lambda c: not (set(parse_wheel_filename(c.name)[3]) & own))
    return found[0] if found else None


# --------------------------------------------------------------------------- the base cache

_READ: dict[tuple, WheelContents] = {}   # the last wheels read as a base (one base serves many targets)


def _read_key(path: Path, needles: Sequence[str]) -> tuple:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size, tuple(needles)


def remember_base(path: Path, needles: Sequence[str], contents: WheelContents) -> None:
    """Keep a base wheel just verified: the target wheels verified next read it as their base."""
    key = _read_key(path, needles)
    _READ.pop(key, None)
    _READ[key] = contents
    while len(_READ) > 2:
        _READ.pop(next(iter(_READ)))


def _read_base(path: Path, needles: Sequence[str]) -> WheelContents:
    """The base wheel read once for all the target wheels verified with it (and with itself, when verified first)."""
    key = _read_key(path, needles)
    if key not in _READ:
        remember_base(path, needles, read_wheel(path, needles, max_elf_size=MAX_ELF_EXTRACT))
    return _READ[key]


# --------------------------------------------------------------------------- the base-wheel check

def pair_with_base(path: Path, info: dict | None, spec: RuntimeSpec, needles: Sequence[str],
                   base: Path | str | None) -> tuple[CheckResult, BaseWheel | None, dict | None]:
    """The base-wheel check of a target wheel: (result, the base wheel if it fits, what was looked at)."""
    name = path.name
    info = info or {}
    version = str(info.get("version") or parse_wheel_filename(name)[1])
    base_dist = str(info.get("base") or spec.package.replace("_", "-"))
    pin = f"{base_dist}=={version}"
    if base is None:
        found = find_base_wheel(path, base_dist, version)
        if found is None:
            return CheckResult("base-wheel", False, f"{name} is a target wheel: verify it with its base wheel {pin} "
                               f"(put {folder_of(base_dist)}-{version}-*.whl beside it or pass --base)"), None, None
        base, how = found, "beside it"
    else:
        base, how = Path(base), "given"
    looked_at = {"wheel": base.name, "version": None}
    try:
        base_name, base_file_version = parse_wheel_filename(base.name)[:2]
    except InvalidWheelFilename as e:
        return CheckResult("base-wheel", False, f"{base.name} is not a wheel file name ({e}); {name} needs {pin}"), \
            None, looked_at
    looked_at["version"] = str(base_file_version)
    contents = _read_base(base, needles)
    base_info, base_member = runtime_info(contents, spec.package)
    if not isinstance(base_info, dict) or base_info.get("kind") != "base" or base_name != canonicalize_name(base_dist):
        return CheckResult("base-wheel", False, f"{base.name} is not the base wheel {base_dist} (no <package>/_runtime.json "
                           f"with \"kind\": \"base\" in a wheel of that name); {name} needs {pin}"), None, looked_at
    pair = BaseWheel(base, contents, base_info, base_member, how)
    looked_at = pair.summary()
    for other in dict.fromkeys([str(base_file_version), pair.version]):
        if not same_version(other, version):
            return CheckResult("base-wheel", False, f"{base.name} is {base_dist} {other}, but {name} is version "
                               f"{version}: a target wheel goes with the base wheel of its own version ({pin})"), \
                None, looked_at
    return (CheckResult("base-wheel", True, f"{base.name} ({how}): {base_dist} {pair.version}, providing "
                        f"{counted(len(pair.provides), 'SONAME')} in {pair.bin_dir}/"), pair, looked_at)
