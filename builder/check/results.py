"""What `moshi-build verify` reports: one CheckResult per check, one VerifyReport per wheel.

Also the three helpers every check writes its line with: check_result() (pass, or the
first few problems on one line), counted() ("1 file", "3 files") and megabytes().
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

LINE_ITEMS = 3          # problems spelled out on a check's line


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    summary: str                       # what passed, or the reason it failed
    problems: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.summary}"

    def to_json(self) -> dict:
        return {"check": self.name, "ok": self.ok, "summary": self.summary, "problems": list(self.problems)}


@dataclasses.dataclass
class VerifyReport:
    wheel: Path
    gpu_target: str | None
    checks: list[CheckResult]
    seconds: float
    kind: str = "wheel"                   # "wheel" (self-contained), "base" or "target"
    base: dict | None = None              # a target wheel's base: {"wheel": file name, "version": V}

    @property
    def label(self) -> str:
        """What the wheel is, for the line naming it."""
        if self.kind == "base":
            return "base wheel"
        if self.kind == "target":
            with_base = f"with {self.base['wheel']}" if self.base else "no base wheel"
            return f"{self.gpu_target or 'unknown target'}, {with_base}"
        return self.gpu_target or "unknown target"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    def lines(self) -> list[str]:
        return [c.line for c in self.checks]

    def to_json(self) -> dict:
        doc = {"wheel": str(self.wheel), "gpu_target": self.gpu_target, "ok": self.ok,
               "seconds": round(self.seconds, 2), "checks": [c.to_json() for c in self.checks]}
        if self.kind != "wheel":
            doc["kind"] = self.kind
        if self.kind == "target":
            doc["base"] = self.base
        return doc


def check_result(name: str, problems: list[str], passed: str) -> CheckResult:
    """A check's result: `passed` when there is no problem, else the first few problems on one line."""
    if not problems:
        return CheckResult(name, True, passed)
    shown = "; ".join(problems[:LINE_ITEMS])
    more = f"; and {len(problems) - LINE_ITEMS} more" if len(problems) > LINE_ITEMS else ""
    return CheckResult(name, False, shown + more, tuple(problems))


def counted(n: int, noun: str) -> str:
    """3 files, 1 file."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
