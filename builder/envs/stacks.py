"""ROCm stacks as data: which Debian suites, packages and exact versions make a build root.

resources/stacks.toml (validated against stacks.schema.json) names each stack
("7.2", "6.4") and the ordered steps that fill a root made by mmdebstrap:

  InstallStep  apt-get install of exact NAME=VERSION pins
  StandinStep  a library generated at creation time that stands in for a package
               we must not install, packaged as a local .deb

This module holds the model and the pure parts (pin checking against
`apt-cache madison`, the stand-in's C source and .deb control file); debian.py
runs them inside the new root.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path


from builder.common import resources
from builder.errors import ConfigurationError, PinnedPackageError
from builder.rocm.standins import returning_source, standin_copyright, undefined_symbols  # noqa: F401 (re-exported)

STANDIN_RECORD_DIR = "usr/share/moshi-build/standins"


@dataclasses.dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @classmethod
    def parse(cls, text: str) -> "Pin":
        name, _, version = text.partition("=")
        return cls(name, version)

    def __str__(self) -> str:
        return f"{self.name}={self.version}"


@dataclasses.dataclass(frozen=True)
class InstallStep:
    why: str
    packages: tuple[Pin, ...]
    kind: str = "install"


@dataclasses.dataclass(frozen=True)
class StandinStep:
    why: str
    package: str
    version: str
    replaces: str
    soname: str
    symbols_from: Pin
    consumer: str
    symbol_prefix: str
    return_value: int
    license: str
    solver_functions: str
    kind: str = "standin"

    def record(self, symbols: list[str]) -> dict:
        """What the root (and every wheel grafting the stand-in) says about it."""
        return {
            "package": self.package, "version": self.version, "soname": self.soname,
            "replaces": self.replaces, "consumer": self.consumer, "symbols_from": str(self.symbols_from),
            "return_value": self.return_value, "license": self.license,
            "solver_functions": self.solver_functions, "why": " ".join(self.why.split()),
            "symbols": sorted(symbols),
        }


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    priority: int


@dataclasses.dataclass(frozen=True)
class RocmStack:
    name: str
    summary: str
    base_suite: str
    variant: str
    min_hip_version: str
    min_free_gib: float
    suites: tuple[Suite, ...]
    hip_offload_flags: str
    rocblas_targets: tuple[str, ...]
    steps: tuple[InstallStep | StandinStep, ...]

    @property
    def pins(self) -> list[Pin]:
        """Every pinned package, the stand-ins' symbol sources included."""
        out: list[Pin] = []
        for step in self.steps:
            out.extend(step.packages if isinstance(step, InstallStep) else [step.symbols_from])
        return out

    @property
    def standins(self) -> list[StandinStep]:
        return [s for s in self.steps if isinstance(s, StandinStep)]

    def to_json(self) -> dict:
        """Everything that makes a root: its key hashes this."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def parse_stacks(data: dict, where: str) -> tuple[dict[str, RocmStack], str]:
    """Validate a loaded stacks document: ({name: stack}, default name)."""
    resources.validate(data, "stacks", where)
    stacks: dict[str, RocmStack] = {}
    for name, s in data["stack"].items():
        steps: list[InstallStep | StandinStep] = []
        for st in s["step"]:
            if st["kind"] == "install":
                steps.append(InstallStep(st["why"], tuple(Pin.parse(p) for p in st["packages"])))
            else:
                fields = {k: v for k, v in st.items() if k != "kind"}
                fields["symbols_from"] = Pin.parse(fields["symbols_from"])
                try:
                    re.compile(fields["solver_functions"])
                except re.error as e:
                    raise ConfigurationError(f"{where}: stack {name}: solver_functions is not a regular "
                                             f"expression: {e}") from None
                steps.append(StandinStep(**fields))
        names = [p.name for step in steps if isinstance(step, InstallStep) for p in step.packages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigurationError(f"{where}: stack {name} pins these packages twice: {', '.join(dupes)}")
        stacks[name] = RocmStack(
            name=name, summary=s["summary"], base_suite=s["base_suite"], variant=s["variant"],
            min_hip_version=s["min_hip_version"], min_free_gib=float(s.get("min_free_gib", 8)),
            suites=tuple(Suite(x["name"], x["priority"]) for x in s["suites"]),
            hip_offload_flags=s["hip_offload_flags"], rocblas_targets=tuple(s["rocblas_targets"]),
            steps=tuple(steps),
        )
    default = data["default"]
    if default not in stacks:
        raise ConfigurationError(f"{where}: default stack {default!r} is not defined; stacks: {', '.join(stacks)}")
    return stacks, default


@functools.cache
def _packaged() -> tuple[dict[str, RocmStack], str]:
    return parse_stacks(resources.load("stacks"), "builder/resources/stacks.toml")


def load_stacks(path: Path | None = None) -> tuple[dict[str, RocmStack], str]:
    if path is None:
        return _packaged()
    return parse_stacks(resources.read_toml(Path(path)), str(path))


def stack_names() -> list[str]:
    return list(_packaged()[0])


def default_stack_name() -> str:
    return _packaged()[1]


def get_stack(name: str | None = None) -> RocmStack:
    stacks, default = _packaged()
    name = name or default
    if name not in stacks:
        raise ConfigurationError(f"unknown ROCm stack {name!r}; choose one of: {', '.join(stacks)}")
    return stacks[name]


# -- pins against the archive ---------------------------------------------------

def parse_madison(text: str) -> dict[str, list[tuple[str, str]]]:
    """`apt-cache madison NAME...` -> {name: [(version, where), ...]} in the order apt lists them.

    Lines look like ` hipcc | 7.2.4+dfsg-1~exp1 | <archive URI> experimental/main amd64 Packages`.
    """
    offers: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 3 or not parts[0] or not parts[1]:
            continue
        where = parts[2].split()
        suite = where[1].split("/")[0] if len(where) > 1 else parts[2]
        if where and where[-1] == "Sources":
            continue
        entry = (parts[1], suite)
        if entry not in offers.setdefault(parts[0], []):
            offers[parts[0]].append(entry)
    return offers


def missing_pins(pins: list[Pin], madison: str) -> list[str]:
    """One phrase per pin the archive does not serve: name, pinned version, what it offers now."""
    offers = parse_madison(madison)
    problems = []
    for pin in pins:
        available = offers.get(pin.name, [])
        if any(v == pin.version for v, _ in available):
            continue
        now = ", ".join(f"{v} ({s})" for v, s in available) or "nothing"
        problems.append(f"{pin.name}: pinned {pin.version}, the archive offers {now}")
    return problems


def check_pins(stack: RocmStack, madison: str) -> None:
    problems = missing_pins(stack.pins, madison)
    if problems:
        raise PinnedPackageError(
            f"ROCm stack {stack.name}: {'; '.join(problems)}; update the pins in "
            "builder/resources/stacks.toml (or choose another stack with --rocm)")


# -- the stand-in -----------------------------------------------------------------

def standin_source(step: StandinStep, symbols: list[str]) -> str:
    """C source: every symbol a function that ignores its arguments and returns the status."""
    return returning_source(step.replaces, step.consumer, step.symbol_prefix, symbols, step.return_value)


def standin_control(step: StandinStep, architecture: str) -> str:
    return "\n".join([
        f"Package: {step.package}",
        f"Version: {step.version}",
        f"Architecture: {architecture}",
        "Maintainer: moshi-build <moshi-build@localhost>",
        "Section: libs",
        "Priority: optional",
        f"Description: moshi-build generated stand-in for {step.replaces}",
        f" Defines the {step.symbol_prefix}* functions {step.consumer} imports; each returns",
        f" {step.return_value}. Made when the build root is created; not a Debian package.",
        "",
    ])
