"""AMD GPU targets: the table of known gfx names, parsing and checking of --gpu-targets.

The table lives in resources/targets.toml and is validated against
resources/targets.schema.json when loaded. Whether a build environment can
build a target is asked of the environment (or one of its sessions), which
answers from cached data, so checking is instant:

  supported_gpu_targets()   gfx names its compiler can generate code for
  rocblas_kernel_targets()  gfx names its rocBLAS ships Tensile kernels for
  rocblas_label             optional, e.g. "Debian's rocBLAS 6.4", for messages
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Iterable, Protocol


from builder.common import resources
from builder.errors import TargetError, shorten
from builder.rocm import gfx, rocblas

_SEPARATORS = re.compile(r"[;,\s]+")


class TargetProvider(Protocol):
    """What check_targets() needs: a BuildEnvironment or an EnvSession."""

    def supported_gpu_targets(self) -> set[str] | None: ...   # None: not known yet
    def rocblas_kernel_targets(self) -> set[str]: ...


@dataclasses.dataclass(frozen=True)
class GpuTarget:
    name: str
    family: str
    gpus: tuple[str, ...]
    gfx_target_version: int
    runs_as: str | None = None                  # alias target under HSA_OVERRIDE_GFX_VERSION
    hsa_override_gfx_version: str | None = None
    elf_mach: int | None = None                 # EF_AMDGPU_MACH of its code objects

    @property
    def override_hint(self) -> str | None:
        if not self.runs_as:
            return None
        return f"{self.name} GPUs can run {self.runs_as} builds with HSA_OVERRIDE_GFX_VERSION={self.hsa_override_gfx_version}"


@dataclasses.dataclass(frozen=True)
class TargetRow:
    """One line of `moshi-build targets`."""

    target: str
    family: str
    gpus: tuple[str, ...]
    compiler: bool | None        # None: no environment was asked
    kernels: bool | None
    runs_as: str | None
    hsa_override_gfx_version: str | None

    @property
    def name(self) -> str:
        return self.target

    @property
    def examples(self) -> str:
        return ", ".join(self.gpus)

    @property
    def buildable(self) -> bool | None:
        if self.compiler is None or self.kernels is None:
            return None
        return self.compiler and self.kernels


def gfx_version(name: str) -> tuple[int, int, int]:
    """(major, minor, stepping) of a gfx name: gfx90a -> (9, 0, 10), gfx1151 -> (11, 5, 1)."""
    version = gfx.gfx_version(name)
    if version is None:
        raise TargetError(f"{name!r} is not a gfx target name (like gfx1100 or gfx90a)")
    return version


def sort_key(name: str) -> tuple:
    try:
        return (0, *gfx_version(name))
    except TargetError:
        return (1, name)


def sorted_targets(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=sort_key)


class TargetTable:
    def __init__(self, targets: list[GpuTarget]) -> None:
        self.targets = {t.name: t for t in targets}

    def __contains__(self, name: str) -> bool:
        return name in self.targets

    def __getitem__(self, name: str) -> GpuTarget:
        return self.targets[name]

    def __iter__(self):
        return iter(self.targets.values())

    def names(self) -> list[str]:
        return sorted_targets(self.targets)

    def families(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in sorted(self.targets.values(), key=lambda t: sort_key(t.name)):
            seen.setdefault(t.family, None)
        return list(seen)


def parse_table(data: dict, where: str) -> TargetTable:
    """Validate a loaded targets TOML document and turn it into a table."""
    resources.validate(data, "targets", where, TargetError)
    targets: list[GpuTarget] = []
    for entry in data["target"]:
        name = entry["name"]
        major, minor, stepping = gfx_version(name)
        expected = major * 10000 + minor * 100 + stepping
        if entry["gfx_target_version"] != expected:
            raise TargetError(
                f"{where}: {name}: gfx_target_version {entry['gfx_target_version']} does not match "
                f"its name (expected {expected})"
            )
        runs_as = entry.get("runs_as")
        targets.append(GpuTarget(
            name=name, family=entry["family"], gpus=tuple(entry["gpus"]),
            gfx_target_version=expected,
            runs_as=runs_as["target"] if runs_as else None,
            hsa_override_gfx_version=runs_as["hsa_override_gfx_version"] if runs_as else None,
            elf_mach=entry.get("elf_mach"),
        ))
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TargetError(f"{where}: targets listed twice: {', '.join(dupes)}")
    table = TargetTable(targets)
    for t in targets:
        if t.runs_as is None:
            continue
        if t.runs_as not in table:
            raise TargetError(f"{where}: {t.name}: runs_as names the unknown target {t.runs_as}")
        alias = table[t.runs_as]
        want = "{}.{}.{}".format(*gfx_version(alias.name))
        if t.hsa_override_gfx_version != want:
            raise TargetError(
                f"{where}: {t.name}: HSA_OVERRIDE_GFX_VERSION for {alias.name} is {want}, "
                f"not {t.hsa_override_gfx_version}"
            )
    return table


def load_targets(path: Path | None = None) -> TargetTable:
    """The table from `path`, or the packaged one (cached)."""
    if path is None:
        return _default_table()
    return parse_table(resources.read_toml(Path(path), TargetError), str(path))


@functools.cache
def _default_table() -> TargetTable:
    return parse_table(resources.load("targets", error=TargetError), "builder/resources/targets.toml")


def parse_gpu_targets(text: str) -> list[str]:
    """'gfx1100;gfx1030', 'gfx1100,gfx1030' or 'gfx1100 gfx1030' -> names, deduplicated in order.

    Only the syntax is checked here; check_targets() says whether they are known
    and buildable.
    """
    names: list[str] = []
    for part in _SEPARATORS.split(text or ""):
        name = part.strip().lower()
        if not name:
            continue
        if not gfx.is_gfx_name(name):
            raise TargetError(
                f"{shorten(repr(part))} is not a gfx target name (like gfx1100 or gfx90a); "
                "`moshi-build targets` lists them with example GPUs"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise TargetError(
            "no gfx target given: name at least one, e.g. gfx1100 or 'gfx1100;gfx1030' "
            "(`moshi-build targets` lists them)"
        )
    return names


def elf_machs(table: TargetTable | None = None) -> dict[str, int]:
    """{target: EF_AMDGPU_MACH} for the targets whose value is known."""
    table = table or load_targets()
    return {t.name: t.elf_mach for t in table if t.elf_mach is not None}


def targets_in_family(family: str, table: TargetTable | None = None) -> list[str]:
    table = table or load_targets()
    names = [t.name for t in table if t.family == family.lower()]
    if not names:
        raise TargetError(f"unknown GPU family {family!r}; families: {', '.join(table.families())}")
    return sorted_targets(names)


def buildable_targets(env: TargetProvider, table: TargetTable | None = None) -> list[str]:
    """Known targets that the environment's compiler supports and its rocBLAS has kernels for."""
    table = table or load_targets()
    compiler = env.supported_gpu_targets()
    ok = env.rocblas_kernel_targets() if compiler is None else compiler & env.rocblas_kernel_targets()
    return [n for n in table.names() if n in ok]


def check_known_targets(targets: list[str], table: TargetTable | None = None) -> None:
    """Raise TargetError for names the table does not know (needs no environment)."""
    table = table or load_targets()
    unknown = [t for t in targets if t not in table]
    if unknown:
        what = "target" if len(unknown) == 1 else "targets"
        raise TargetError(
            f"unknown gfx {what} {', '.join(repr(t) for t in unknown)}; "
            f"known targets: {' '.join(table.names())}"
        )


def check_targets(targets: list[str], env: TargetProvider, table: TargetTable | None = None) -> None:
    """Raise TargetError unless every target is known and buildable in `env`."""
    table = table or load_targets()
    check_known_targets(targets, table)
    compiler = env.supported_gpu_targets()   # None: not known yet (environment not created)
    kernels = env.rocblas_kernel_targets()
    problems = []
    for t in targets:
        if compiler is not None and t not in compiler:
            problems.append(f"{t}: the compiler of this environment cannot generate code for it")
        elif t not in kernels:
            problems.append(f"{t}: {rocblas.label_of(env)} ships no kernels for it")
        else:
            continue
        hint = table[t].override_hint
        if hint and table[t].runs_as in (kernels if compiler is None else compiler & kernels):
            problems[-1] += f" ({hint})"
    if problems:
        supported = " ".join(buildable_targets(env, table)) or "none"
        raise TargetError(f"{'; '.join(problems)}; targets this environment supports: {supported}")


def targets_table(env: TargetProvider | None = None, table: TargetTable | None = None) -> list[TargetRow]:
    """Rows for `moshi-build targets`: every known target, and what `env` can do with it."""
    table = table or load_targets()
    compiler = env.supported_gpu_targets() if env is not None else None
    kernels = env.rocblas_kernel_targets() if env is not None else None  # either may be None: unknown
    rows = []
    for name in table.names():
        t = table[name]
        rows.append(TargetRow(
            target=name, family=t.family, gpus=t.gpus,
            compiler=None if compiler is None else name in compiler,
            kernels=None if kernels is None else name in kernels,
            runs_as=t.runs_as, hsa_override_gfx_version=t.hsa_override_gfx_version,
        ))
    return rows
