"""`moshi-build verify`'s code-selection check: the wheel's own comgr picks the target's code objects.

  code-selection  the wheel's comgr, asked what the HIP runtime asks, gives the target's code
                  object (e_flags naming it) for every bundle of every fat binary and
                  code-object file, and nothing for any other target. A target wheel's
                  bundles are asked of its base wheel's comgr (and the libLLVM it needs).
                  A base wheel carries no GPU code: the check does not apply to it.

The asking is builder/check/code_selection.py's (it unpacks the wheel into a root filesystem
and runs comgr_probe.py there); this module picks what to ask, and where.
"""

from __future__ import annotations

from pathlib import Path

from builder.check.code_selection import check_wheel as ask_comgr
from builder.check.context import GPU_KINDS, NO_GPU_CODE, Check, Context
from builder.check.elf_paths import elf_members_named, library_closure
from builder.check.policies import MANYLINUX
from builder.check.results import CheckResult, check_result
from builder.errors import FatalError
from builder.rocm import rocblas
from builder.rocm.targets import elf_machs

NAME = "code-selection"
COMGR = "libamd_comgr.so*"


def check_code_selection(ctx: Context) -> CheckResult:
    """Ask the wheel's own comgr which code object the HIP runtime would load (check/code_selection.py)."""
    target = ctx.gpu_target
    if not target:
        return check_result(NAME, ["the wheel's gfx target is unknown (see runtime-info)"], "")
    fatbins = [m for m, d in ctx.contents.details.items() if d.fatbin is not None and d.fatbin.bundles]
    pair: dict = {}
    if ctx.kind == "target":
        # The bundles are the target wheel's; comgr (and the libLLVM it needs) is the base wheel's.
        base = ctx.base
        comgr = elf_members_named(base.contents, base.libs_dir, COMGR)
        pair = {"comgr_wheel": base.path,
                "comgr_closure": library_closure(base.contents, comgr[0]) if comgr else None}
    else:
        comgr = elf_members_named(ctx.contents, ctx.libs_dir, COMGR)
    rules = [r for r in ctx.spec.data_dirs if r.select == "gpu_target"]
    kernel_folder = f"{ctx.package}/{rules[0].into}/" if rules else None
    has_code_files = bool(kernel_folder) and any(
        m.startswith(kernel_folder) and rocblas.is_code_object_file(m) for m in ctx.contents.files)
    if not fatbins and not has_code_files:
        return CheckResult(NAME, True, "no device code in the wheel")
    if ctx.kind == "target" and not comgr:
        return check_result(NAME, [f"the base wheel {ctx.base.path.name} has no libamd_comgr to ask"], "")
    probe_root = _probe_root(ctx)
    if isinstance(probe_root, CheckResult):
        return probe_root
    sel = ask_comgr(ctx.contents.report.path, target=target, machs=elf_machs(),
                    comgr_member=comgr[0] if comgr else None, fatbin_members=fatbins,
                    kernel_folder=kernel_folder, probe_root=probe_root, **pair)
    if sel.skipped:
        return CheckResult(NAME, True, sel.skipped)
    others = len(elf_machs()) - 1
    whose = "the base wheel's comgr" if ctx.kind == "target" else "the wheel's comgr"
    where = "this machine" if Path(probe_root.root) == Path("/") else f"the clean root {Path(probe_root.root).parent.name}"
    return check_result(NAME, sel.problems,
                        f"{whose}, run in {where}, gives a {target} code object for each of {sel.bundles} bundles and "
                        f"code-object files ({sel.files} files) and nothing for {others} other targets")


def _probe_root(ctx: Context):
    """Where comgr runs (a code_selection.ProbeRoot), or the failed result saying why it cannot run."""
    platform_tags = ctx.contents.report.platform_tags + (ctx.base.contents.report.platform_tags if ctx.base else [])
    tags = [m for m in (MANYLINUX.match(t) for t in platform_tags) if m]
    needed = max(((int(m.group(1)), int(m.group(2))) for m in tags), default=None)
    # a wheel with a glibc floor is probed on the floor's system (its suite is checked against environments.toml)
    floor = ctx.info.get("glibc_floor") if isinstance(ctx.info, dict) else None
    suite = floor.get("suite") if isinstance(floor, dict) and isinstance(floor.get("suite"), str) else None
    try:
        if callable(ctx.probe_root):
            probe_root = ctx.probe_root(needed, suite) if suite else ctx.probe_root(needed)
        else:
            probe_root = ctx.probe_root
    except FatalError as e:  # e.g. the clean root cannot be made here (not root, no network)
        return check_result(NAME, [f"no root filesystem to run the wheel's comgr in: {e}"], "")
    if probe_root is None:
        return check_result(NAME, ["no root filesystem to run the wheel's comgr in was given"], "")
    return probe_root


CHECK = Check(NAME, check_code_selection, GPU_KINDS, NO_GPU_CODE)
