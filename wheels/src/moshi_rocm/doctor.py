"""moshi-rocm doctor: can this machine's AMD GPU run this wheel?

Reads what the kernel says, no ROCm tool needed:
  /dev/kfd                  the compute interface (read/write needed)
  KFD topology in sysfs     /sys/class/kfd/kfd/topology/nodes/<N>/properties, lines
                            "name value"; gfx_target_version is major*10000 +
                            minor*100 + stepping (110000 -> gfx1100, 100301 ->
                            gfx1031); CPU nodes report 0
  /dev/dri/renderD<minor>   each GPU's render node (drm_render_minor)
and compares with the wheel's gfx target and the target table the builder
wrote into _runtime.json ("targets": which GPUs run which target's code with
HSA_OVERRIDE_GFX_VERSION).

MOSHI_ROCM_SYSFS and MOSHI_ROCM_DEV replace /sys and /dev (for tests).
Exit status: 0 when a GPU can run this wheel as things are, 1 otherwise.

Part of the wheel: standard library only, Python 3.8.
"""

from __future__ import annotations

import grp
import os
import stat
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

SYSFS_ENV = "MOSHI_ROCM_SYSFS"
DEV_ENV = "MOSHI_ROCM_DEV"
OVERRIDE_ENV = "HSA_OVERRIDE_GFX_VERSION"
TOPOLOGY = ("class", "kfd", "kfd", "topology", "nodes")

EXIT_USABLE = 0
EXIT_NOT_USABLE = 1


class Gpu(NamedTuple):
    index: int                  # HIP's device order: ggml calls it ROCm<index>
    node: str                   # KFD topology node
    target: Optional[str]       # gfx name; None when the kernel does not say
    device_id: Optional[int]
    render: Optional[str]       # /dev/dri/renderD<minor>
    render_access: Tuple[bool, str]


class Verdict(NamedTuple):
    usable: bool
    text: str


def gfx_name(version: int) -> str:
    """KFD's gfx_target_version -> gfx name: 110000 -> gfx1100, 90010 -> gfx90a."""
    return "gfx%d%x%x" % (version // 10000, (version // 100) % 100, version % 100)


def override_target(value: str) -> Optional[str]:
    """HSA_OVERRIDE_GFX_VERSION "10.3.0" -> gfx1030; None if it does not parse."""
    parts = value.strip().split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    major, minor, stepping = (int(p) for p in parts)
    return gfx_name(major * 10000 + minor * 100 + stepping)


def parse_properties(text: str) -> Dict[str, str]:
    props = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            props[key] = value.strip()
    return props


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def device_access(path: str) -> Tuple[bool, str]:
    """(usable, what is wrong or "read/write") for a device node."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False, "missing"
    except OSError as e:
        return False, "cannot be inspected (%s)" % (e.strerror or e)
    if not stat.S_ISCHR(st.st_mode):
        return False, "not a character device"
    if not os.access(path, os.R_OK | os.W_OK):
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o060 == 0o060 and st.st_gid != 0:
            return False, ("not readable and writable by this user: it belongs to group %s; "
                           "sudo usermod -aG %s $USER, then log in again" % (group, group))
        return False, ("not readable and writable by this user (mode %03o, group %s); ask the administrator "
                       "to give the GPU users' group (usually render) read/write access" % (mode, group))
    return True, "read/write"


def read_gpus(sysfs: str, dev: str) -> Tuple[List[Gpu], Optional[str]]:
    """The GPU nodes of the KFD topology, in node order; and why none could be read, if so."""
    nodes_dir = os.path.join(sysfs, *TOPOLOGY)
    try:
        nodes = sorted((n for n in os.listdir(nodes_dir) if n.isdigit()), key=int)
    except FileNotFoundError:
        return [], ("no KFD topology at %s: the amdgpu kernel driver is not loaded "
                    "(or /sys is not visible here)" % nodes_dir)
    except OSError as e:
        return [], "cannot read %s: %s" % (nodes_dir, e.strerror or e)
    gpus: List[Gpu] = []
    unreadable = []
    for node in nodes:
        path = os.path.join(nodes_dir, node, "properties")
        try:
            with open(path) as f:
                props = parse_properties(f.read())
        except OSError:
            # The kernel refuses (EPERM) the properties of GPUs a device cgroup hides.
            unreadable.append(node)
            continue
        version = _int(props.get("gfx_target_version"))
        simd = _int(props.get("simd_count")) or 0
        if not version and not (version is None and simd > 0):
            continue  # a CPU node (gfx_target_version 0)
        minor = _int(props.get("drm_render_minor"))
        render = os.path.join(dev, "dri", "renderD%d" % minor) if minor else None
        gpus.append(Gpu(len(gpus), node, gfx_name(version) if version else None,
                        _int(props.get("device_id")), render,
                        device_access(render) if render else (False, "no render node in the topology")))
    problem = None
    if unreadable and not gpus:
        problem = "the KFD topology nodes %s cannot be read (hidden by a device cgroup?)" % ", ".join(unreadable)
    return gpus, problem


def _distribution(info: dict, target: str) -> str:
    pattern = info.get("distribution_pattern") or "moshi-rocm-{gpu_target}"
    return pattern.replace("{gpu_target}", target)


def judge(gpu: Gpu, info: dict, override: Optional[str]) -> Tuple[str, str]:
    """(kind, advice) for one GPU: kind is fits, override (fits once a variable is set) or other."""
    wheel_target = info.get("gpu_target")
    table = info.get("targets") or {}
    if gpu.target is None:
        return "other", "the kernel does not report its gfx target (kernel older than 5.15?)"
    effective = override_target(override) if override else gpu.target
    if effective == wheel_target:
        if override and gpu.target != wheel_target:
            return "fits", "runs this wheel's %s code with %s=%s (set)" % (wheel_target, OVERRIDE_ENV, override)
        return "fits", "this wheel's target"
    entry = table.get(gpu.target, {})
    runs_as, version = entry.get("runs_as"), entry.get("hsa_override_gfx_version")
    if runs_as == wheel_target and version:
        return "override", ("runs this wheel's %s code with %s=%s: export %s=%s"
                            % (wheel_target, OVERRIDE_ENV, version, OVERRIDE_ENV, version))
    if runs_as and version:
        return "other", ("this wheel carries %s code: pip install %s and export %s=%s"
                         % (wheel_target, _distribution(info, runs_as), OVERRIDE_ENV, version))
    if entry.get("no_wheel"):
        return "other", ("this wheel carries %s code, and there is no moshi-rocm wheel for %s (%s); "
                         "the tools run on the CPU with -d CPU" % (wheel_target, gpu.target, entry["no_wheel"]))
    return "other", "this wheel carries %s code: pip install %s" % (wheel_target, _distribution(info, gpu.target))


def verdict(gpus: List[Gpu], kfd: Tuple[bool, str], kfd_path: str, info: dict,
            override: Optional[str]) -> Verdict:
    if not gpus:
        return Verdict(False, "no AMD GPU found: the tools run on the CPU only (-d CPU)")
    judged = [(g,) + judge(g, info, override) for g in gpus]
    fitting = [(g, advice) for g, kind, advice in judged if kind == "fits"]
    if fitting and not kfd[0]:
        g = fitting[0][0]
        return Verdict(False, "GPU %d (%s) fits this wheel, but %s is %s" % (g.index, g.target, kfd_path, kfd[1]))
    usable = [(g, advice) for g, advice in fitting if g.render_access[0]]
    if usable:
        g, advice = usable[0]
        return Verdict(True, "this wheel fits GPU %d (%s, %s): run the tools with -d ROCm%d"
                       % (g.index, g.target, advice, g.index))
    if fitting:
        g = fitting[0][0]
        return Verdict(False, "GPU %d (%s) fits this wheel, but its render node %s is %s"
                       % (g.index, g.target, g.render, g.render_access[1]))
    for kind in ("override", "other"):
        for g, k, advice in judged:
            if k == kind:
                return Verdict(False, "GPU %d is a %s: %s" % (g.index, g.target or "GPU of unknown target", advice))
    raise AssertionError("unreachable")  # pragma: no cover


def _gpu_names(info: dict, target: Optional[str]) -> str:
    gpus = ((info.get("targets") or {}).get(target or "", {}) or {}).get("gpus") or []
    return " (%s)" % ", ".join(gpus) if gpus else ""


def report(info: dict, sysfs: str, dev: str, override: Optional[str]) -> Tuple[List[str], Verdict]:
    target = info.get("gpu_target")
    lines = ["wheel:    %s %s, code for %s%s" % (info.get("distribution", "?"), info.get("version", "?"),
                                                 target, _gpu_names(info, target))]
    kfd_path = os.path.join(dev, "kfd")
    kfd = device_access(kfd_path)
    lines.append("%s: %s" % (kfd_path, "ok (read/write)" if kfd[0] else kfd[1]))
    gpus, problem = read_gpus(sysfs, dev)
    for g in gpus:
        device = ", device 0x%04x" % g.device_id if g.device_id is not None else ""
        render = "%s: %s" % (g.render, "ok" if g.render_access[0] else g.render_access[1]) if g.render \
            else g.render_access[1]
        lines.append("GPU %d:    %s%s (KFD node %s%s), %s" % (g.index, g.target or "unknown target",
                                                            _gpu_names(info, g.target), g.node, device, render))
    if not gpus:
        lines.append("GPUs:     none (%s)" % (problem or "no GPU node in the KFD topology"))
    if override:
        lines.append("%s=%s is set: ROCm treats every GPU as %s" % (OVERRIDE_ENV, override,
                                                                     override_target(override) or "?"))
    result = verdict(gpus, kfd, kfd_path, info, override)
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
