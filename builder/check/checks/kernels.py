"""`moshi-build verify`'s kernels check: the kernel folder holds the target's files and no other's.

  kernels  for each data folder runtime.toml selects by gpu_target (rocBLAS's Tensile library)
           whose reader is in the wheel: the folder holds files for the wheel's target and none
           for another target. A base wheel carries no GPU code: the check does not apply to it.
"""

from __future__ import annotations

import fnmatch
import posixpath

from builder.check.context import GPU_KINDS, NO_GPU_CODE, Check, Context
from builder.check.results import CheckResult, check_result, counted
from builder.common.wheel_reader import built_name
from builder.rocm import rocblas

NAME = "kernels"


def check_kernels(ctx: Context) -> CheckResult:
    target = ctx.gpu_target
    rules = [r for r in ctx.spec.data_dirs if r.select == "gpu_target"]
    problems, found = [], []
    package = ctx.package
    for rule in rules:
        readers = [m for m in ctx.contents.elf if fnmatch.fnmatchcase(built_name(m, ctx.libs_dir), rule.needed_by)]
        if not readers:
            continue
        folder = f"{package}/{rule.into}/"
        names = sorted(m[len(folder):] for m in ctx.contents.files if m.startswith(folder))
        if not target:
            problems.append(f"{rule.name}: the wheel's gfx target is unknown (see runtime-info)")
            continue
        if not names:
            problems.append(f"{rule.name}: {folder} is missing or empty, but {posixpath.basename(readers[0])} reads it")
            continue
        own = [n for n in names if rocblas.is_target_file(posixpath.basename(n), target)]
        foreign = [n for n in names if rocblas.foreign_targets(posixpath.basename(n), target)]
        if not own:
            problems.append(f"{rule.name}: {folder} holds no file for {target}")
        if foreign:
            others = sorted(rocblas.targets_in_names(posixpath.basename(n) for n in foreign) - {target})
            problems.append(f"{rule.name}: {folder} holds {counted(len(foreign), 'file')} of other targets "
                            f"({', '.join(others)}), e.g. {foreign[0]}")
        found.append(f"{folder}: {len(own)} {target} files, {len(names) - len(own) - len(foreign)} for any target")
    if not rules or not found and not problems:
        return CheckResult(NAME, True, "no kernel folder applies to this wheel")
    return check_result(NAME, problems, "; ".join(found))


CHECK = Check(NAME, check_kernels, GPU_KINDS, NO_GPU_CODE)
