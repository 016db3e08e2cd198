"""The GitHub Actions build matrix: one job per gfx target that gets its own wheel.

A family stands for the targets of that family that need their own code: a target
whose GPUs run another target's code (`runs_as` in resources/targets.toml) is
served by that target's wheel under HSA_OVERRIDE_GFX_VERSION, so it gets no job of
its own. Targets named one by one are taken as given (once each, in order).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from builder.errors import ConfigurationError, TargetError
from builder.rocm.targets import (TargetTable, check_known_targets, load_targets, parse_gpu_targets,
                             sorted_targets, targets_in_family)

GITHUB_OUTPUT_ENV = "GITHUB_OUTPUT"
_FAMILY_SEPARATORS = re.compile(r"[;,\s]+")


def family_targets(family: str, table: TargetTable | None = None,
                   kernel_targets: set[str] | None = None) -> list[str]:
    """The targets of `family` that get a wheel of their own: not served by another target's
    wheel, and (with `kernel_targets`, the ROCm stack's rocBLAS) buildable."""
    table = table or load_targets()
    return [t for t in targets_in_family(family, table) if table[t].runs_as is None
            and (kernel_targets is None or t in kernel_targets)]


def resolve_targets(gpu_targets: str | None = None, families: list[str] | tuple[str, ...] = (),
                    table: TargetTable | None = None, kernel_targets: set[str] | None = None,
                    rocblas_label: str = "rocBLAS") -> list[str]:
    """Targets from a --gpu-targets list and/or family names, deduplicated in order.

    With `kernel_targets`, a named target the stack's rocBLAS has no kernels for is refused."""
    table = table or load_targets()
    names: list[str] = []
    if gpu_targets is not None:
        names += parse_gpu_targets(gpu_targets)
    family_names = [f for text in families for f in _FAMILY_SEPARATORS.split(text) if f]
    if kernel_targets is not None:
        check_known_targets(names, table)
        missing = [t for t in names if t not in kernel_targets]
        if missing:
            raise TargetError("; ".join(f"{t}: {rocblas_label} ships no kernels for it" for t in missing)
                              + "; no wheel can be built for it")
    for family in family_names:
        found = family_targets(family, table, kernel_targets)
        if not found:
            raise TargetError(f"no target of family {family!r} can be built with {rocblas_label}")
        names += found
    if gpu_targets is None and not family_names:
        raise ConfigurationError(
            "name the targets: --gpu-targets 'gfx1100;gfx1030' or --family rdna3 "
            f"(families: {', '.join(table.families())})"
        )
    check_known_targets(names, table)
    return list(dict.fromkeys(names))


def matrix_entry(target: str, table: TargetTable) -> dict:
    served = [target] + [t.name for t in table if t.runs_as == target]
    return {
        "gpu_target": target,
        "family": table[target].family,
        # the targets whose GPUs can install this wheel (the others with HSA_OVERRIDE_GFX_VERSION)
        "serves": " ".join(sorted_targets(served)),
    }


def github_matrix(targets: list[str], table: TargetTable | None = None) -> dict:
    """{"include": [{"gpu_target": ..., "family": ..., "serves": ...}, ...]} for `strategy.matrix`."""
    table = table or load_targets()
    check_known_targets(targets, table)
    return {"include": [matrix_entry(t, table) for t in targets]}


def to_json(matrix: dict) -> str:
    # One line: the form GITHUB_OUTPUT's NAME=VALUE lines and fromJSON() take.
    return json.dumps(matrix, separators=(",", ":"))


def write_github_output(matrix: dict, name: str = "matrix", path: str | Path | None = None) -> Path:
    """Append NAME=<json> to the file GitHub Actions names in $GITHUB_OUTPUT."""
    where = path or os.environ.get(GITHUB_OUTPUT_ENV)
    if not where:
        raise ConfigurationError(
            f"--github-output needs ${GITHUB_OUTPUT_ENV} (set by GitHub Actions in a job step)"
        )
    where = Path(where)
    with where.open("a", encoding="utf-8") as f:
        f.write(f"{name}={to_json(matrix)}\n")
    return where
