"""`moshi-build verify`'s gpu-code check: the libraries that carry device code carry the target's.

  gpu-code  every library verify.toml names (libggml-hip.so, librocblas) has a readable
            .hip_fatbin with code objects for the wheel's gfx target. A base wheel carries
            no GPU code: the check does not apply to it.
"""

from __future__ import annotations

import posixpath

from builder.check.context import GPU_KINDS, NO_GPU_CODE, Check, Context
from builder.check.elf_paths import elf_members_named
from builder.check.results import CheckResult, check_result, counted, megabytes

NAME = "gpu-code"


def check_gpu_code(ctx: Context) -> CheckResult:
    target = ctx.gpu_target
    if not target:
        return check_result(NAME, ["the wheel's gfx target is unknown (see runtime-info)"], "")
    problems, found = [], []
    for pattern in ctx.settings.device_code:
        members = elf_members_named(ctx.contents, ctx.libs_dir, pattern)
        if not members:
            problems.append(f"no {pattern} in the wheel")
            continue
        for member in members:
            details = ctx.contents.details[member]
            name = posixpath.basename(member)
            if details.fatbin_error:
                problems.append(f"{name}: {details.fatbin_error}")
                continue
            if details.fatbin is None:
                problems.append(f"{name} has no .hip_fatbin section: no GPU code at all")
                continue
            targets = details.fatbin.targets
            if target not in targets:
                held = ", ".join(sorted(targets)) or "no target"
                problems.append(f"{name} carries code objects for {held}, none for {target}")
                continue
            others = len(targets) - 1
            found.append(f"{name} {megabytes(targets[target])} for {target} in {counted(details.fatbin.bundles, 'bundle')}"
                         + (f" (+{counted(others, 'other target')})" if others else ""))
    return check_result(NAME, problems, "; ".join(found))


CHECK = Check(NAME, check_gpu_code, GPU_KINDS, NO_GPU_CODE)
