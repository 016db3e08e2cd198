"""What a wheel must carry at run time: builder/resources/runtime.toml, validated."""

from __future__ import annotations
import dataclasses
import fnmatch
import logging
from pathlib import Path
from typing import Iterable, Mapping
from builder.common import resources
from builder.errors import RecipeError
from builder.rocm import rocblas
from builder.rocm.standins import WheelStandinRule
from builder.package.floor_spec import FloorSpec


log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DlopenRule:
    """A library opened with dlopen(): runtime.toml's [[dlopen]] is the only list of them.

    build_wheel records the rules in the wheel's _runtime.json ("dlopen"), and
    `moshi-build verify` applies the wheel's own record (from_json).
    """
    soname: str
    needed_by: str | None = None   # fnmatch pattern of the SONAME that opens it (None: always bundled)
    bundle: bool = True
    reason: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "DlopenRule":
        """A rule as _runtime.json records it; ValueError if it is not one."""
        if not isinstance(data, Mapping) or not isinstance(data.get("soname"), str) or not data["soname"]:
            raise ValueError(f"not a dlopen rule: {data!r}")
        needed_by = data.get("needed_by")
        return cls(data["soname"], needed_by if isinstance(needed_by, str) and needed_by else None,
                   bool(data.get("bundle", True)), str(data.get("reason") or ""))


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
    base_distribution: str = ""
    base_summary: str = ""
    target_package: str = "{package}_{gpu_target}"
    shared_runtime: tuple[str, ...] = ()
    glibc_floor: FloorSpec | None = None     # [glibc_floor]: None keeps auditwheel's tag
    project_urls: tuple[tuple[str, str], ...] = ()   # [wheel.project_urls], in the file's order

    def distribution_for(self, gpu_target: str) -> str:
        return self.distribution.format(gpu_target=gpu_target, package=self.package)

    def target_package_for(self, gpu_target: str) -> str:
        return self.target_package.format(gpu_target=gpu_target, package=self.package)

    def license_for_package(self, package: str) -> str | None:
        for pattern, expression in self.debian_licenses:
            if fnmatch.fnmatchcase(package, pattern):
                return expression
        return None


def builtin_data_dirs() -> tuple[DataDirRule, ...]:
    """Data folders the builder knows of itself: rocBLAS's Tensile kernels (resources/rocblas.toml)."""
    return (DataDirRule(**rocblas.kernel_folder_rule()),)


def with_builtin_data_dirs(rules: Iterable[DataDirRule]) -> tuple[DataDirRule, ...]:
    """The built-in data folders, then `rules` (a runtime file's [[data_dir]]); a rule with the
    name of a built-in one replaces it."""
    rules = tuple(rules)
    names = {r.name for r in rules}
    return tuple(r for r in builtin_data_dirs() if r.name not in names) + rules


def parse_runtime_spec(data: dict, where: str) -> RuntimeSpec:
    resources.validate(data, "runtime", where, RecipeError)
    w, p, l = data["wheel"], data["payload"], data["launcher"]
    spec = RuntimeSpec(
        distribution=w["distribution"],
        package=w["package"],
        summary=w["summary"],
        keywords=tuple(w.get("keywords", ())),
        project_urls=tuple((w.get("project_urls") or {}).items()),
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
        data_dirs=with_builtin_data_dirs(DataDirRule(d["name"], d["needed_by"], tuple(d["search"]), d["into"],
                                                     d.get("select"), d.get("env")) for d in data.get("data_dir", ())),
        debian_licenses=tuple(data.get("debian_licenses", {}).items()),
        path=Path(where),
        standins=tuple(WheelStandinRule(**s) for s in data.get("standin", ())),
        base_distribution=w.get("base_distribution", ""),
        base_summary=w.get("base_summary", w["summary"]),
        target_package=w.get("target_package", "{package}_{gpu_target}"),
        shared_runtime=tuple(w.get("shared_runtime", ())),
        glibc_floor=FloorSpec.from_toml(data["glibc_floor"]) if "glibc_floor" in data else None,
    )
    for field in ("{release}", "{build_number}"):
        if field not in spec.version_format:
            raise RecipeError(f"{where}: wheel.version_format must contain {field}")
    if "{gpu_target}" not in spec.distribution:
        raise RecipeError(f"{where}: wheel.distribution must contain {{gpu_target}}: one distribution per target")
    return spec


def load_runtime_spec(path: Path | None = None) -> RuntimeSpec:
    if path is None:
        return parse_runtime_spec(resources.load("runtime", error=RecipeError), "builder/resources/runtime.toml")
    return parse_runtime_spec(resources.read_toml(Path(path), RecipeError), str(path))
