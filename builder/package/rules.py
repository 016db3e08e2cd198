"""What a wheel must carry at run time: builder/resources/runtime.toml, validated."""

from __future__ import annotations
import dataclasses
import fnmatch
import logging
import tomllib
from importlib import resources
from pathlib import Path
from typing import Iterable
import jsonschema
from builder.errors import RecipeError
from builder.rocm.standins import WheelStandinRule


log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DlopenRule:
    soname: str
    needed_by: str | None = None   # fnmatch pattern of the SONAME that opens it
    bundle: bool = True
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class DataDirRule:
    name: str
    needed_by: str
    search: tuple[str, ...]
    into: str
    select: str | None = None      # "gpu_target" or None (everything)
    env: str | None = None


@dataclasses.dataclass(frozen=True)
class RuntimeSpec:
    distribution: str
    package: str
    summary: str
    keywords: tuple[str, ...]
    version_format: str
    bin_dir: str
    lib_sdir: str
    strip: bool
    libraries: tuple[str, ...]
    data: tuple[str, ...]
    device_flags: tuple[str, ...]
    device_aliases: tuple[tuple[str, str], ...]
    dlopen: tuple[DlopenRule, ...]
    data_dirs: tuple[DataDirRule, ...]
    debian_licenses: tuple[tuple[str, str], ...]
    path: Path | None = None
    trim_device_code: bool = False
    standins: tuple[WheelStandinRule, ...] = ()

    def distribution_for(self, gpu_target: str) -> str:
        return self.distribution.format(gpu_target=gpu_target, package=self.package)

    def with_dlopen(self, sonames: Iterable[str]) -> "RuntimeSpec":
        """Add dlopen'd libraries named elsewhere (recipes' [runtime] dlopen).

        A name that already has a rule keeps it (the rule says who opens it);
        a new name gets a rule without needed_by: always bundled.
        """
        known = {r.soname for r in self.dlopen}
        extra = tuple(DlopenRule(s, reason="listed by a recipe") for s in dict.fromkeys(sonames) if s not in known)
        return dataclasses.replace(self, dlopen=self.dlopen + extra) if extra else self

    def license_for_package(self, package: str) -> str | None:
        for pattern, expression in self.debian_licenses:
            if fnmatch.fnmatchcase(package, pattern):
                return expression
        return None


_STR = {"type": "string", "minLength": 1}


_STRS = {"type": "array", "items": _STR}


_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "wheel", "payload", "launcher"],
    "properties": {
        "schema_version": {"const": 1},
        "wheel": {
            "type": "object", "additionalProperties": False,
            "required": ["distribution", "package", "summary", "version_format", "bin_dir"],
            "properties": {
                "distribution": _STR, "package": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"},
                "summary": _STR, "keywords": _STRS, "version_format": _STR,
                "bin_dir": _STR, "lib_sdir": {"type": "string", "pattern": "^\\.[A-Za-z0-9_.-]+$"},
                "strip": {"type": "boolean"}, "trim_device_code": {"type": "boolean"},
            },
        },
        "payload": {
            "type": "object", "additionalProperties": False,
            "properties": {"libraries": _STRS, "data": _STRS},
        },
        "launcher": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "device_flags": _STRS,
                "device_aliases": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["from", "to"],
                    "properties": {"from": _STR, "to": _STR}}},
            },
        },
        "dlopen": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["soname"],
            "properties": {"soname": _STR, "needed_by": _STR, "bundle": {"type": "boolean"}, "reason": {"type": "string"}},
        }},
        "data_dir": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "needed_by", "search", "into"],
            "properties": {"name": _STR, "needed_by": _STR, "search": _STRS, "into": _STR,
                           "select": {"enum": ["gpu_target"]}, "env": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"}},
        }},
        "standin": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["soname", "needed_by", "symbol_prefix", "replaces", "why"],
            "properties": {"soname": _STR, "needed_by": _STR, "symbol_prefix": _STR, "replaces": _STR,
                           "why": _STR, "license": _STR},
        }},
        "debian_licenses": {"type": "object", "additionalProperties": _STR},
    },
}


def parse_runtime_spec(data: dict, where: str) -> RuntimeSpec:
    errors = sorted(jsonschema.Draft202012Validator(_SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        loc = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise RecipeError(f"{where}: {loc}: {e.message}")
    w, p, l = data["wheel"], data["payload"], data["launcher"]
    spec = RuntimeSpec(
        distribution=w["distribution"],
        package=w["package"],
        summary=w["summary"],
        keywords=tuple(w.get("keywords", ())),
        version_format=w["version_format"],
        bin_dir=w["bin_dir"],
        lib_sdir=w.get("lib_sdir", ".libs"),
        strip=w.get("strip", True),
        trim_device_code=w.get("trim_device_code", False),
        libraries=tuple(p.get("libraries", ())),
        data=tuple(p.get("data", ())),
        device_flags=tuple(l.get("device_flags", ())),
        device_aliases=tuple((a["from"], a["to"]) for a in l.get("device_aliases", ())),
        dlopen=tuple(DlopenRule(d["soname"], d.get("needed_by"), d.get("bundle", True), d.get("reason", ""))
                     for d in data.get("dlopen", ())),
        data_dirs=tuple(DataDirRule(d["name"], d["needed_by"], tuple(d["search"]), d["into"],
                                    d.get("select"), d.get("env")) for d in data.get("data_dir", ())),
        debian_licenses=tuple(data.get("debian_licenses", {}).items()),
        path=Path(where),
        standins=tuple(WheelStandinRule(**s) for s in data.get("standin", ())),
    )
    for field in ("{release}", "{build_number}"):
        if field not in spec.version_format:
            raise RecipeError(f"{where}: wheel.version_format must contain {field}")
    if "{gpu_target}" not in spec.distribution:
        raise RecipeError(f"{where}: wheel.distribution must contain {{gpu_target}}: one distribution per target")
    return spec


def load_runtime_spec(path: Path | None = None) -> RuntimeSpec:
    try:
        if path is None:
            text = resources.files("builder.resources").joinpath("runtime.toml").read_text()
            where = "builder/resources/runtime.toml"
        else:
            text, where = Path(path).read_text(), str(path)
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise RecipeError(f"{path}: runtime rules not found") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path or 'runtime.toml'}: not valid TOML: {e}") from None
    return parse_runtime_spec(data, where)
