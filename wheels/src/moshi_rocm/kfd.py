"""The machine's GPUs as the kernel's KFD driver reports them, read without any ROCm tool:
/dev/kfd, the KFD topology in sysfs and each GPU's render node (see doctor.py).

Shared by the launcher (which wheel's code, which HSA_OVERRIDE_GFX_VERSION) and doctor.
Part of the wheel: standard library only, Python 3.9.
"""

from __future__ import annotations

import grp
import os
import re
import stat
from typing import Dict, List, NamedTuple, Optional, Tuple

SYSFS_ENV = "MOSHI_ROCM_SYSFS"
DEV_ENV = "MOSHI_ROCM_DEV"
OVERRIDE_ENV = "HSA_OVERRIDE_GFX_VERSION"
TOPOLOGY = ("class", "kfd", "kfd", "topology", "nodes")
PROPERTIES_CAP = 64 << 10      # the kernel prints ~1 KB; more is not a KFD properties file
_NUMBER_DIGITS = 20            # the longest number sysfs prints (a u64)
# Plausible ranges (sysfs is hostile input: a number outside them means "not known")
MAX_GFX_VERSION = 999999       # major (<100) * 10000 + minor * 100 + stepping
MAX_DEVICE_ID = 0xFFFF         # a PCI device id
MAX_RENDER_MINOR = (1 << 20) - 1
MAX_SIMD_COUNT = 1 << 20


class Gpu(NamedTuple):
    index: int                  # HIP's device order: ggml calls it ROCm<index>
    node: str                   # KFD topology node
    target: Optional[str]       # gfx name; None when the kernel does not say
    device_id: Optional[int]
    render: Optional[str]       # /dev/dri/renderD<minor>
    render_access: Tuple[bool, str]


def gfx_name(version: int) -> str:
    """KFD's gfx_target_version -> gfx name: 110000 -> gfx1100, 90010 -> gfx90a."""
    return "gfx%d%x%x" % (version // 10000, (version // 100) % 100, version % 100)


def plausible_gfx_version(version: Optional[int]) -> bool:
    """A gfx_target_version that names a gfx target: 1..999999, minor and stepping one hex digit each."""
    return version is not None and 0 < version <= MAX_GFX_VERSION and (version // 100) % 100 < 16 \
        and version % 100 < 16


def override_target(value: str) -> Optional[str]:
    """HSA_OVERRIDE_GFX_VERSION "10.3.0" -> gfx1030; None if it does not parse (ASCII digits only,
    a major of 1..99, a minor and a stepping of 0..15)."""
    parts = value.strip().split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 2 for p in parts):
        return None
    major, minor, stepping = (int(p) for p in parts)
    version = major * 10000 + minor * 100 + stepping
    return gfx_name(version) if major and plausible_gfx_version(version) else None


def parse_properties(text: str) -> Dict[str, str]:
    props = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            props[key] = value.strip()
    return props


def _int(value: Optional[str], low: int = 0, high: Optional[int] = None) -> Optional[int]:
    """A decimal number of ASCII digits within [low, high]; None otherwise (a garbled or absurd value)."""
    if value is None or not re.fullmatch(r"-?[0-9]{1,%d}" % _NUMBER_DIGITS, value):
        return None
    number = int(value)
    if number < low or (high is not None and number > high):
        return None
    return number


def read_properties(path: str) -> Dict[str, str]:
    """A node's properties file: at most PROPERTIES_CAP bytes, undecodable bytes replaced (OSError
    when it cannot be read)."""
    with open(path, "rb") as f:
        data = f.read(PROPERTIES_CAP)
    return parse_properties(data.decode("utf-8", errors="replace"))


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
        nodes = sorted((n for n in os.listdir(nodes_dir) if n.isascii() and n.isdigit()), key=int)
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
            props = read_properties(path)
        except OSError:
            # The kernel refuses (EPERM) the properties of GPUs a device cgroup hides.
            unreadable.append(node)
            continue
        raw_version = _int(props.get("gfx_target_version"), 0, None)
        version = raw_version if raw_version == 0 or plausible_gfx_version(raw_version) else None
        simd = _int(props.get("simd_count"), 0, MAX_SIMD_COUNT) or 0
        if not version and not (version is None and simd > 0):
            continue  # a CPU node (gfx_target_version 0)
        minor = _int(props.get("drm_render_minor"), 1, MAX_RENDER_MINOR)
        render = os.path.join(dev, "dri", "renderD%d" % minor) if minor else None
        gpus.append(Gpu(len(gpus), node, gfx_name(version) if version else None,
                        _int(props.get("device_id"), 0, MAX_DEVICE_ID), render,
                        device_access(render) if render else (False, "no render node in the topology")))
    problem = None
    if unreadable and not gpus:
        problem = "the KFD topology nodes %s cannot be read (hidden by a device cgroup?)" % ", ".join(unreadable)
    return gpus, problem
