"""moshi-rocm doctor | info | selftest
python -m moshi_rocm doctor | info | selftest | TOOL [ARGS...] | --list | --info

  doctor    does this machine have a GPU this wheel can use? (exit 0 if so)
  info      versions of the bundled components, the gfx target, the paths
  selftest  run the bundled tools on a small job
  TOOL      run a bundled tool (the same as its console script)
  --list    the bundled tools; --info: _runtime.json as it is
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from ._launcher import PACKAGE_DIR, LauncherError, console_entry, runtime_info

COMMANDS = ("doctor", "info", "selftest")


def info_lines(info: dict, package_dir=PACKAGE_DIR) -> list:
    """What `info` prints: the build, its paths and every bundled component with its version."""
    bin_dir = os.path.join(str(package_dir), info.get("bin_dir", "bin"))
    lines = [
        "%s %s for %s" % (info.get("distribution", "?"), info.get("version", "?"), info.get("gpu_target", "?")),
        "package:    %s" % package_dir,
        "tools:      %s (%s)" % (bin_dir, ", ".join(info.get("tools", [])) or "none"),
        "libraries:  %s" % ", ".join(os.path.normpath(os.path.join(str(package_dir), d))
                                     for d in info.get("library_dirs", [])),
    ]
    for var, rel in sorted(info.get("env", {}).items()):
        lines.append("%-11s %s (set for the tools)" % (var + ":", os.path.join(str(package_dir), rel)))
    lines.append("python:     %s (Python %s)" % (sys.executable, sys.version.split()[0]))
    lines.append("components:")
    for c in info.get("components", []):
        lines.append("  %s %s (%s)" % (c.get("name"), c.get("version"), c.get("license")))
    build = info.get("build") or {}
    if build.get("rocm_stack"):
        lines.append("built with: ROCm stack %s (HIP %s, clang %s, rocBLAS %s, glibc %s)" % (
            build.get("rocm_stack"), build.get("hip_version"), build.get("clang_version"),
            build.get("rocblas_version"), build.get("glibc_version")))
    packages = info.get("system_packages", [])
    standins = {s.get("package"): s for s in info.get("standins", [])}
    if packages:
        lines.append("system libraries (distribution packages):")
        for p in packages:
            lines.append("  %s %s (%s): %s" % (p.get("package"), p.get("version"), p.get("license"),
                                              ", ".join(p.get("libraries", []))))
            s = standins.get(p.get("package"))
            if s:
                behaviour = s.get("behaviour") or "returns %s (not implemented)" % s.get("return_value")
                lines.append("    a generated STAND-IN, not %s: each of its %d %s* functions %s; "
                             "only %s links it, for functions the tools never call"
                             % (s.get("replaces"), len(s.get("symbols", [])),
                                (s.get("symbols") or ["?"])[0].split("_")[0] + "_", behaviour,
                                s.get("consumer")))
    return lines


def run_command(command: str, args: list, info: dict) -> int:
    if command == "doctor":
        from . import doctor
        return doctor.main(args, info)
    if command == "info":
        print("\n".join(info_lines(info)))
        return 0
    # selftest lives in its own module, imported only when asked for.
    try:
        selftest = importlib.import_module(__package__ + ".selftest")
    except ModuleNotFoundError as e:
        if e.name != __package__ + ".selftest":
            raise
        print("moshi-rocm: selftest is not part of this build (%s/selftest.py is missing)" % PACKAGE_DIR,
              file=sys.stderr)
        return 127
    return selftest.main(list(args))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        info = runtime_info()
    except LauncherError as e:
        print(f"moshi_rocm: {e}", file=sys.stderr)
        return 127
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"tools: {', '.join(info.get('tools', []))}")
        return 0 if argv else 2
    if argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:], info)
    if argv[0] == "--list":
        print("\n".join(info.get("tools", [])))
        return 0
    if argv[0] == "--info":
        print(json.dumps(info, indent=2))
        return 0
    sys.argv = [argv[0], *argv[1:]]
    return console_entry(argv[0])()


if __name__ == "__main__":
    sys.exit(main())
