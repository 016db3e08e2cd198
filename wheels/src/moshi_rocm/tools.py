"""Console-script targets: one attribute per bundled tool.

The wheel's entry points read `moshi-tts = "moshi_rocm.tools:moshi_tts"`; the
names come from _runtime.json ("entry_points"), written when the wheel was
built, so this module lists no tool itself.
"""

from __future__ import annotations

from ._launcher import LauncherError, console_entry, runtime_info


def _entry_points() -> dict:
    try:
        return runtime_info().get("entry_points", {})
    except LauncherError:
        return {}


def __getattr__(name: str):
    tool = _entry_points().get(name)
    if tool is None:
        raise AttributeError(f"module {__name__!r} has no tool {name!r}")
    return console_entry(tool)


def __dir__():
    return sorted(_entry_points())
