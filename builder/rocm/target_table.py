"""The README's GPU table: which wheel to install for which GPU (`moshi-build targets --markdown`).

One row per target that gets a wheel of its own, and one row per target whose GPUs run such
a wheel's code with HSA_OVERRIDE_GFX_VERSION (`runs_as` in resources/targets.toml; the
launcher sets the variable). Rows are in gfx order, so each such row follows its wheel's row.

Which targets get a wheel is the CI matrix's rule (publish/matrix.py, family_targets) applied
to WHEEL_FAMILIES with the ROCm stack's rocBLAS; the caller (cli.py) passes the result in.
This module reads the targets table only: no build environment, no stage of the pipeline.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from builder.rocm.targets import TargetTable, check_known_targets, load_targets

# The GPU families CI makes wheels for when no target is named: the default of the workflow's
# `families` input (ci/github/workflows/wheels.yml); tests/rocm/test_target_table.py holds
# the two equal.
WHEEL_FAMILIES = ("rdna3", "rdna2", "rdna4", "rdna3.5", "cdna3")

HEADER = ("GPU", "gfx", "pip install", "HSA_OVERRIDE_GFX_VERSION")


@dataclasses.dataclass(frozen=True)
class GpuRow:
    gpus: str                  # example products, as targets.toml names them
    target: str                # the GPUs' own gfx name
    wheel: str                 # the distribution to install
    override: str = ""         # HSA_OVERRIDE_GFX_VERSION the launcher sets ("" for the wheel's own GPUs)

    def cells(self) -> tuple[str, str, str, str]:
        return (self.gpus, self.target, f"`{self.wheel}`", self.override)


def default_distribution(gpu_target: str) -> str:
    return f"moshi-rocm-{gpu_target}"


def gpu_rows(wheel_targets: Iterable[str], table: TargetTable | None = None,
             distribution_for: Callable[[str], str] = default_distribution) -> list[GpuRow]:
    """The rows for the targets that get wheels (`wheel_targets`) and the GPUs that run their code."""
    table = table or load_targets()
    wheels = list(dict.fromkeys(wheel_targets))
    check_known_targets(wheels, table)
    rows = []
    for name in table.names():
        t = table[name]
        if name in wheels:
            rows.append(GpuRow(", ".join(t.gpus), name, distribution_for(name)))
        elif t.runs_as in wheels:
            rows.append(GpuRow(", ".join(t.gpus), name, distribution_for(t.runs_as), t.hsa_override_gfx_version or ""))
    return rows


def markdown(rows: Iterable[GpuRow]) -> str:
    """A Markdown table of `rows` (no trailing newline)."""
    lines = [_line(HEADER), _line(("---",) * len(HEADER))]
    lines += [_line(r.cells()) for r in rows]
    return "\n".join(lines)


def _line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
