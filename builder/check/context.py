"""What a check of `moshi-build verify` is (Check) and what it is given (Context).

A check has a name, the kinds of wheel it applies to ("wheel": self-contained, "base",
"target"; docs/WHEEL-PAIR.md) and a run that returns a CheckResult. On a wheel of another
kind the runner does not run it: the check passes with its not_applicable summary.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from builder.check.pair import BaseWheel
from builder.check.results import CheckResult
from builder.check.settings import VerifySettings
from builder.check.wheel_contents import WheelContents
from builder.package.rules import RuntimeSpec

KINDS = frozenset({"wheel", "base", "target"})
GPU_KINDS = frozenset({"wheel", "target"})      # the kinds that carry GPU code
NO_GPU_CODE = "not applicable: a base wheel carries no GPU code"


@dataclasses.dataclass
class Context:
    contents: WheelContents
    spec: RuntimeSpec
    settings: VerifySettings
    info: dict | None
    info_member: str | None
    gpu_target: str | None
    libs_dir: str | None
    policy: object | None                 # auditwheel Policy of the wheel's tag
    needles: list[str]
    generic: list[str]
    probe_root: object | None = None      # code_selection.ProbeRoot, or callable(needed glibc) making one
    kind: str = "wheel"                   # "wheel" (self-contained), "base" or "target"
    base: BaseWheel | None = None         # a target wheel's base wheel

    @property
    def package(self) -> str:
        """The wheel's folder: its import package (a target wheel: the folder of its _target.json)."""
        if self.kind == "target" and self.info_member:
            return self.info_member.split("/", 1)[0]
        return (self.info or {}).get("package", self.spec.package)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], CheckResult]
    kinds: frozenset[str] = KINDS          # the kinds of wheel it applies to
    not_applicable: str = ""               # its passing summary on a wheel of another kind

    def result(self, ctx: Context) -> CheckResult:
        if ctx.kind not in self.kinds:
            return CheckResult(self.name, True, self.not_applicable)
        return self.run(ctx)
