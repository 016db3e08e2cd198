"""runtime.toml [glibc_floor] as a typed object: the glibc version the wheels load on and how
the files are lowered to it (builder/package/glibc_floor.py does the lowering). Its own module
so the runtime spec (rules.py) can hold it without importing the lowering."""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

GLIBC_VERSION = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$")
_SONAME = re.compile(r"lib[A-Za-z0-9_+-]{1,64}\.so(\.[0-9]{1,4}){0,4}")


def version_key(version: str) -> tuple[int, ...] | None:
    """(2, 34) for GLIBC_2.34; None for anything else (GLIBC_PRIVATE, GLIBCXX_...)."""
    m = GLIBC_VERSION.match(version)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


@dataclasses.dataclass(frozen=True)
class FloorSpec:
    """runtime.toml [glibc_floor]."""
    version: str                         # "2.31"
    baseline: str                        # "GLIBC_2.2.5": where every need above the floor points
    libraries: tuple[str, ...]           # glibc's libraries (SONAMEs) whose needs are rewritten
    compat_soname: str
    private: tuple[tuple[str, str], ...]  # (SONAME in the root, SONAME in the wheel)
    gcc_runtime: str = "libgcc_s.so.1"   # left to the system: its needs must be in the floor's copy
    suite: str = "bullseye"              # the Debian suite whose glibc is the floor

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.version.split("."))

    def platform_tag(self, arch: str) -> str:
        major, minor = self.version.split(".")[:2]
        return f"manylinux_{major}_{minor}_{arch}"

    def above(self, version: str) -> bool:
        key = version_key(version)
        return key is not None and key > self.key

    @property
    def renames(self) -> dict[str, str]:
        return dict(self.private)

    @classmethod
    def from_json(cls, data: Mapping) -> "FloorSpec":
        """The spec a wheel's record carries (to_json()), checked as hostile input: the version
        names a resource file, the names become member paths; ValueError if it is not one."""
        try:
            spec = cls.from_toml({**data, "private": [{"soname": a, "ships_as": b} for a, b in data.get("private", [])]})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a glibc floor record: {e}") from None
        names = [*spec.libraries, spec.compat_soname, spec.gcc_runtime, *(n for pair in spec.private for n in pair)]
        if not isinstance(spec.version, str) or not re.fullmatch(r"2\.\d{1,3}", spec.version) \
                or not isinstance(spec.baseline, str) or not version_key(spec.baseline) \
                or not all(isinstance(n, str) and _SONAME.fullmatch(n) for n in names) \
                or not isinstance(spec.suite, str) or not re.fullmatch(r"[a-z]{1,32}", spec.suite):
            raise ValueError(f"not a glibc floor record: {str(dict(data))[:200]!r}")
        return spec

    @classmethod
    def from_toml(cls, data: Mapping) -> "FloorSpec":
        return cls(version=data["version"], baseline=data["baseline"], libraries=tuple(data["libraries"]),
                   compat_soname=data["compat_soname"],
                   private=tuple((p["soname"], p["ships_as"]) for p in data.get("private", ())),
                   gcc_runtime=data.get("gcc_runtime", "libgcc_s.so.1"), suite=data.get("suite", "bullseye"))

    def to_json(self) -> dict:
        return {"version": self.version, "baseline": self.baseline, "libraries": list(self.libraries),
                "compat_soname": self.compat_soname, "private": [list(p) for p in self.private],
                "gcc_runtime": self.gcc_runtime, "suite": self.suite}
