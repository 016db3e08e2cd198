"""moshi-rocm doctor: can this machine's AMD GPU run the tools' GPU code?

Reads what the kernel says, no ROCm tool needed:
  /dev/kfd                  the compute interface (read/write needed)
  KFD topology in sysfs     /sys/class/kfd/kfd/topology/nodes/<N>/properties, lines
                            "name value"; gfx_target_version is major*10000 +
                            minor*100 + stepping (110000 -> gfx1100, 100301 ->
                            gfx1031); CPU nodes report 0
  /dev/dri/renderD<minor>   each GPU's render node (drm_render_minor)
and compares with the gfx target whose code the tools run, using the target
table the builder wrote into _runtime.json ("targets": which GPUs run which
target's code with HSA_OVERRIDE_GFX_VERSION). With the base wheel moshi-rocm,
that code is in the target wheel (moshi-rocm-<gfx>) the tools pick
(MOSHI_ROCM_TARGET, else the only one installed, else the one of the first GPU
that has one); with none installed, doctor names the one to install for each
GPU. A self-contained wheel (built before the split) carries its own target.

MOSHI_ROCM_SYSFS and MOSHI_ROCM_DEV replace /sys and /dev (for tests).
Exit status: 0 when a GPU can run the tools' GPU code as things are, 1 otherwise.

Part of the wheel: standard library only, Python 3.9.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

from .kfd import DEV_ENV, OVERRIDE_ENV, SYSFS_ENV, Gpu, device_access, override_target, read_gpus

EXIT_USABLE = 0
EXIT_NOT_USABLE = 1


class Verdict(NamedTuple):
    usable: bool
    text: str


class Code(NamedTuple):
    """Whose GPU code the tools run, and how doctor words it."""
    target: Optional[str]           # gfx target of that code; None: no GPU code (base wheel alone)
    subject: str                    # "this wheel" / "moshi-rocm-gfx1100"
    owner: str                      # "this wheel's" / "its"
    installed: Dict[str, object]    # base wheel: gfx -> usable TargetWheel installed (chosen or not)
    ignored: Dict[str, str]         # base wheel: gfx -> why an installed target wheel cannot be used
    split: bool                     # a base wheel (the GPU code is in target wheels)
    auto_override: Optional[str] = None   # HSA_OVERRIDE_GFX_VERSION the launcher sets for the tools


def _distribution(info: dict, target: str) -> str:
    from ._launcher import target_distribution
    return target_distribution(info, target)


def _code_of_wheel(info: dict) -> Code:
    """A self-contained wheel: its own target."""
    return Code(info.get("gpu_target"), "this wheel", "this wheel's", {}, {}, False)


def _install(info: dict, code: Code, target: str) -> str:
    """What to do to get `target`'s code used: pip install it, or select it when it is installed."""
    if target in code.installed:
        from ._launcher import TARGET_ENV
        return "%s is installed, but the tools use %s: export %s=%s" % (
            _distribution(info, target), code.subject, TARGET_ENV, target)
    if target in code.ignored:
        return code.ignored[target]
    return "pip install %s" % _distribution(info, target)


def judge(gpu: Gpu, info: dict, override: Optional[str], code: Optional[Code] = None) -> Tuple[str, str]:
    """(kind, advice) for one GPU: kind is fits, override (fits once a variable is set), other (another
    wheel would fit) or none (no wheel can)."""
    code = code or _code_of_wheel(info)
    wheel_target = code.target
    table = info.get("targets") or {}
    if gpu.target is None:
        return "none", "the kernel does not report its gfx target (kernel older than 5.15?)"
    if override and override_target(override) is None:
        override = None     # malformed: the launcher ignores it too (report() says so)
    effective = override_target(override) if override else gpu.target
    if wheel_target is not None and effective == wheel_target:
        if override and gpu.target != wheel_target:
            return "fits", "runs %s %s code with %s=%s (set)" % (code.owner, wheel_target, OVERRIDE_ENV, override)
        return "fits", "%s target" % code.owner
    if code.split and override and effective:
        # ROCm treats the GPU as the target the variable names: that is the code it needs.
        return "other", ("%s=%s is set, so it needs %s code: %s"
                         % (OVERRIDE_ENV, override, effective, _install(info, code, effective)))
    entry = table.get(gpu.target, {})
    runs_as, version = entry.get("runs_as"), entry.get("hsa_override_gfx_version")
    if wheel_target is not None and runs_as == wheel_target and version and version == code.auto_override:
        return "fits", ("runs %s %s code with %s=%s, which the tools set themselves"
                        % (code.owner, wheel_target, OVERRIDE_ENV, version))
    if wheel_target is not None and runs_as == wheel_target and version:
        return "override", ("runs %s %s code with %s=%s: export %s=%s"
                            % (code.owner, wheel_target, OVERRIDE_ENV, version, OVERRIDE_ENV, version))
    if not code.split:
        if runs_as and version:
            return "other", ("this wheel carries %s code: pip install %s and export %s=%s"
                             % (wheel_target, _distribution(info, runs_as), OVERRIDE_ENV, version))
        if entry.get("no_wheel"):
            return "none", ("this wheel carries %s code, and there is no moshi-rocm wheel for %s (%s); "
                            "the tools run on the CPU with -d CPU" % (wheel_target, gpu.target, entry["no_wheel"]))
        return "other", "this wheel carries %s code: pip install %s" % (wheel_target, _distribution(info, gpu.target))
    if wheel_target:
        using = "the tools use %s code (%s)" % (wheel_target, code.subject)
    elif (runs_as if runs_as and version else gpu.target) in code.ignored:
        using = "its target wheel cannot be used, the tools run on the CPU"
    else:
        using = "no target wheel is installed for it, the tools run on the CPU"
    if runs_as and version:
        return "other", ("%s; it runs %s code with %s=%s: %s and export %s=%s"
                         % (using, runs_as, OVERRIDE_ENV, version, _install(info, code, runs_as), OVERRIDE_ENV,
                            version))
    if entry.get("no_wheel"):
        return "none", ("there is no moshi-rocm wheel for %s (%s); the tools run on the CPU with -d CPU"
                        % (gpu.target, entry["no_wheel"]))
    return "other", "%s: %s" % (using, _install(info, code, gpu.target))


def verdict(gpus: List[Gpu], kfd: Tuple[bool, str], kfd_path: str, info: dict,
            override: Optional[str], code: Optional[Code] = None) -> Verdict:
    code = code or _code_of_wheel(info)
    if not gpus:
        return Verdict(False, "no AMD GPU found: the tools run on the CPU only (-d CPU)")
    judged = [(g,) + judge(g, info, override, code) for g in gpus]
    fitting = [(g, advice) for g, kind, advice in judged if kind == "fits"]
    if fitting and not kfd[0]:
        g = fitting[0][0]
        return Verdict(False, "GPU %d (%s) fits %s, but %s is %s" % (g.index, g.target, code.subject, kfd_path,
                                                                    kfd[1]))
    usable = [(g, advice) for g, advice in fitting if g.render_access[0]]
    if usable:
        g, advice = usable[0]
        return Verdict(True, "%s fits GPU %d (%s, %s): run the tools with -d ROCm%d"
                       % (code.subject, g.index, g.target, advice, g.index))
    if fitting:
        g = fitting[0][0]
        return Verdict(False, "GPU %d (%s) fits %s, but its render node %s is %s"
                       % (g.index, g.target, code.subject, g.render, g.render_access[1]))
    for kind in ("override", "other", "none"):
        for g, k, advice in judged:
            if k == kind:
                return Verdict(False, "GPU %d is a %s: %s" % (g.index, g.target or "GPU of unknown target", advice))
    raise AssertionError("unreachable")  # pragma: no cover


def _gpu_names(info: dict, target: Optional[str]) -> str:
    gpus = ((info.get("targets") or {}).get(target or "", {}) or {}).get("gpus") or []
    return " (%s)" % ", ".join(gpus) if gpus else ""


def _split_header(info: dict, gpus: List[Gpu], environ, package_dir) -> Tuple[List[str], Code, Optional[str]]:
    """A base wheel's first lines (itself, its target wheels, the one the tools use), whose code the
    verdict is about, and why the tools cannot start at all (MOSHI_ROCM_TARGET naming a missing wheel)."""
    from ._launcher import LauncherError, installed_targets, select_target

    lines = ["wheel:    %s %s, the base wheel (the tools; their GPU code comes in a target wheel)"
             % (info.get("distribution", "?"), info.get("version", "?"))]
    found = installed_targets(info, package_dir)
    for t in found:
        lines.append("target:   %s %s, code for %s%s%s" % (
            t.info.get("distribution") or _distribution(info, t.gpu_target), t.info.get("version", "?"),
            t.gpu_target, _gpu_names(info, t.gpu_target), ": NOT USABLE: " + t.problem if t.problem else ""))
    if not found:
        lines.append("targets:  none installed: the tools run on the CPU")
    installed = {t.gpu_target: t for t in found if not t.problem}
    ignored = {t.gpu_target: t.problem for t in found if t.problem}
    try:
        selection = select_target(info, environ, package_dir, gpus=gpus)
    except LauncherError as e:
        lines.append("tools:    cannot start: %s" % e)
        return lines, Code(None, "no target wheel", "its", installed, ignored, True), str(e)
    for message in selection.warnings:
        lines.append("warning:  %s" % message)
    chosen = selection.target
    if chosen is None:
        if found:
            lines.append("tools:    run on the CPU (%s)" % selection.reason)
        return lines, Code(None, "no target wheel", "its", installed, ignored, True), None
    subject = chosen.info.get("distribution") or _distribution(info, chosen.gpu_target)
    lines.append("tools:    use %s (%s)" % (subject, selection.reason))
    from ._launcher import automatic_override
    override = automatic_override(info, chosen.gpu_target, environ, gpus)
    if override.message:
        lines.append("setting:  %s" % override.message)
    return lines, Code(chosen.gpu_target, subject, "its", installed, ignored, True, override.value), None


def malformed_override(value: Optional[str]) -> Optional[str]:
    """One line when HSA_OVERRIDE_GFX_VERSION is set but is no gfx version (None when it is fine or unset)."""
    if not value or override_target(value) is not None:
        return None
    return ("warning:  %s=%r is not a gfx version like 11.0.0 (three numbers in ASCII digits): the tools' choice "
            "of GPU code ignores it, and ROCm may reject it: unset it" % (OVERRIDE_ENV, value[:40]))


def report(info: dict, sysfs: str, dev: str, override: Optional[str], environ=None,
           package_dir=None) -> Tuple[List[str], Verdict]:
    from ._launcher import PACKAGE_DIR, is_base

    gpus, problem = read_gpus(sysfs, dev)
    malformed = malformed_override(override)
    if malformed:
        override = None     # what the launcher does: it chooses the code as if the variable were unset
    if is_base(info):
        lines, code, broken = _split_header(info, gpus, os.environ if environ is None else environ,
                                            PACKAGE_DIR if package_dir is None else package_dir)
    else:
        target = info.get("gpu_target")
        lines = ["wheel:    %s %s, code for %s%s" % (info.get("distribution", "?"), info.get("version", "?"),
                                                     target, _gpu_names(info, target))]
        code, broken = _code_of_wheel(info), None
    kfd_path = os.path.join(dev, "kfd")
    kfd = device_access(kfd_path)
    lines.append("%s: %s" % (kfd_path, "ok (read/write)" if kfd[0] else kfd[1]))
    for g in gpus:
        device = ", device 0x%04x" % g.device_id if g.device_id is not None else ""
        render = "%s: %s" % (g.render, "ok" if g.render_access[0] else g.render_access[1]) if g.render \
            else g.render_access[1]
        lines.append("GPU %d:    %s%s (KFD node %s%s), %s" % (g.index, g.target or "unknown target",
                                                            _gpu_names(info, g.target), g.node, device, render))
        if code.split and code.target is None and g.target is not None and not broken:
            # The base wheel alone: the wheel each GPU needs.
            kind, advice = judge(g, info, override, code)
            lines.append("          %s" % advice)
    if not gpus:
        lines.append("GPUs:     none (%s)" % (problem or "no GPU node in the KFD topology"))
    if malformed:
        lines.append(malformed)
    elif override:
        lines.append("%s=%s is set: ROCm treats every GPU as %s" % (OVERRIDE_ENV, override,
                                                                     override_target(override)))
    if broken:
        result = Verdict(False, "the tools cannot start: %s" % broken)
    else:
        result = verdict(gpus, kfd, kfd_path, info, override, code)
    lines.append("verdict:  " + result.text)
    return lines, result


def main(argv: List[str], info: dict) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return EXIT_USABLE
    if argv:
        print("moshi-rocm doctor: takes no arguments (got %s)" % " ".join(argv), file=sys.stderr)
        return 2
    sysfs = os.environ.get(SYSFS_ENV) or "/sys"
    dev = os.environ.get(DEV_ENV) or "/dev"
    lines, result = report(info, sysfs, dev, os.environ.get(OVERRIDE_ENV) or None)
    print("\n".join(lines))
    return EXIT_USABLE if result.usable else EXIT_NOT_USABLE
