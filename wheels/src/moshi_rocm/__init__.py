"""moshi.cpp's tools with ggml, FFmpeg and the ROCm runtime, built for one AMD gfx target.

The tools are console scripts (moshi-tts, moshi-stt, ...); `python -m moshi_rocm`
runs them too and shows what this build contains (`--info`).
"""

from __future__ import annotations

from pathlib import Path

from ._launcher import PACKAGE_DIR, LauncherError, runtime_info


def build_info() -> dict:
    """gfx target, version and bundled components of this build."""
    return runtime_info()


def tool_path(tool: str) -> Path:
    """Path of a bundled native tool (run it through the console script, which sets the environment)."""
    from ._launcher import tool_path as _tool_path

    return _tool_path(tool, runtime_info())


def __getattr__(name: str):
    if name in ("__version__", "gpu_target"):
        info = runtime_info()
        return info["version"] if name == "__version__" else info["gpu_target"]
    raise AttributeError(name)


__all__ = ["PACKAGE_DIR", "LauncherError", "build_info", "tool_path"]
