"""moshi.cpp's tools with ggml, FFmpeg and the ROCm runtime, for AMD GPUs.

The tools are console scripts (moshi-tts, moshi-stt, ...); `python -m moshi_rocm`
runs them too and shows what this build contains (`info`, `--info`). The base
wheel moshi-rocm holds the tools; the GPU code of each gfx target is in a target
wheel moshi-rocm-<gfx> installed beside it (moshi_rocm_<gfx>/). A wheel built
before the split carries one target itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._launcher import PACKAGE_DIR, LauncherError, runtime_info


def build_info() -> dict:
    """Version and bundled components of this build (_runtime.json), and its gfx target if self-contained."""
    return runtime_info()


def target_wheels() -> list:
    """The target wheels installed beside this package (_launcher.TargetWheel), usable or not."""
    from ._launcher import installed_targets

    return installed_targets(runtime_info())


def tool_path(tool: str) -> Path:
    """Path of a bundled native tool (run it through the console script, which sets the environment)."""
    from ._launcher import tool_path as _tool_path

    return _tool_path(tool, runtime_info())


def __getattr__(name: str):
    """__version__; gpu_target: the gfx target whose code the tools run now (None: the CPU only)."""
    if name in ("__version__", "gpu_target"):
        info = runtime_info()
        if name == "__version__":
            return info["version"]
        from ._launcher import is_base, select_target

        if not is_base(info):
            return info["gpu_target"]
        target = select_target(info, os.environ).target
        return target.gpu_target if target else None
    raise AttributeError(name)


__all__ = ["PACKAGE_DIR", "LauncherError", "build_info", "target_wheels", "tool_path"]
