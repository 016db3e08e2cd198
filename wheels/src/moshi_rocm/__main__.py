"""moshi-rocm doctor | info | selftest
python -m moshi_rocm doctor | info | selftest | TOOL [ARGS...] | --list | --info

  doctor    does this machine have a GPU the tools can use? (exit 0 if so); with the base
            wheel alone, which target wheel (moshi-rocm-<gfx>) to install for it
  info      versions of the bundled components, the installed target wheels, the paths
  selftest  run the bundled tools on a small job
  TOOL      run a bundled tool (the same as its console script)
  --list    the bundled tools; --info: _runtime.json as it is
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from ._launcher import (BACKEND_ENV, PACKAGE_DIR, LauncherError, console_entry, describe_selection,
                        installed_targets, is_base, runtime_info, select_target)

COMMANDS = ("doctor", "info", "selftest")


def _contents_lines(info: dict, indent: str = "") -> list:
    """Components, build facts, system packages and stand-ins of one wheel's JSON."""
    lines = [indent + "components:"]
    for c in info.get("components", []):
        lines.append("%s  %s %s (%s)" % (indent, c.get("name"), c.get("version"), c.get("license")))
    build = info.get("build") or {}
    if build.get("rocm_stack"):
        lines.append("%sbuilt with: ROCm stack %s (HIP %s, clang %s, rocBLAS %s, glibc %s)" % (
            indent, build.get("rocm_stack"), build.get("hip_version"), build.get("clang_version"),
            build.get("rocblas_version"), build.get("glibc_version")))
    packages = info.get("system_packages", [])
    standins = {s.get("package"): s for s in info.get("standins", [])}
    if packages:
        lines.append(indent + "system libraries (distribution packages):")
        for p in packages:
            lines.append("%s  %s %s (%s): %s" % (indent, p.get("package"), p.get("version"), p.get("license"),
                                                ", ".join(p.get("libraries", []))))
            s = standins.get(p.get("package"))
            if s:
                behaviour = s.get("behaviour") or "returns %s (not implemented)" % s.get("return_value")
                lines.append("%s    a generated STAND-IN, not %s: each of its %d %s* functions %s; "
                             "only %s links it, for functions the tools never call"
                             % (indent, s.get("replaces"), len(s.get("symbols", [])),
                                (s.get("symbols") or ["?"])[0].split("_")[0] + "_", behaviour,
                                s.get("consumer")))
    return lines


def provenance_line(info: dict) -> str:
    """"moshi.cpp <commit> (<date>), ROCm stack 7.2": what the wheel was built from ("" if unknown)."""
    upstream = info.get("upstream") or {}
    stack = (info.get("build") or {}).get("rocm_stack")
    parts = []
    if upstream.get("name"):
        ref = upstream.get("commit") or upstream.get("release") or "?"
        parts.append("%s %s%s" % (upstream["name"], ref, " (%s)" % upstream["date"] if upstream.get("date") else ""))
    if stack:
        parts.append("ROCm stack %s" % stack)
    return ", ".join(parts)


SBOM = os.path.join("sboms", "moshi-build.cdx.json")   # in the .dist-info (PEP 770)


def sbom_lines(info: dict, package_dir, indent: str = "") -> list:
    """Where the wheel's SBOM is installed and how many components it lists (none: no line)."""
    norm = "".join(c if c.isalnum() or c == "." else "_" for c in str(info.get("distribution", ""))).lower()
    path = os.path.join(os.path.dirname(os.path.abspath(str(package_dir))),
                        "%s-%s.dist-info" % (norm.replace(".", "_"), info.get("version", "")), SBOM)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return []
    components = doc.get("components") if isinstance(doc, dict) else None
    return ["%ssbom:       %s (CycloneDX %s, %d components)" % (
        indent, path, doc.get("specVersion", "?"), len(components) if isinstance(components, list) else 0)]


def _target_lines(info: dict, package_dir, environ) -> list:
    """A base wheel's target wheels: each with its contents, then the one the tools use now."""
    found = installed_targets(info, package_dir)
    if not found:
        return ["target wheels: none installed: the tools run on the CPU "
                "(`moshi-rocm doctor` names the one for this machine's GPU)"]
    lines = ["target wheels:"]
    for t in found:
        gpus = ((info.get("targets") or {}).get(t.gpu_target) or {}).get("gpus") or []
        lines.append("  %s %s for %s%s" % (t.info.get("distribution") or "?", t.info.get("version", "?"),
                                          t.gpu_target, " (%s)" % ", ".join(gpus) if gpus else ""))
        lines.append("    folder:     %s" % t.folder)
        if t.problem:
            lines.append("    NOT USABLE: %s" % t.problem)
        if not t.info:
            continue
        lines.append("    backend:    %s (%s for the tools)" % (t.backend(), BACKEND_ENV))
        for var, rel in sorted(t.info.get("env", {}).items()):
            lines.append("    %-11s %s (set for the tools)" % (var + ":", os.path.join(str(t.folder), rel)))
        lines.append("    libraries:  %s" % ", ".join(os.path.normpath(os.path.join(str(t.folder), d))
                                                     for d in t.info.get("library_dirs", [])))
        lines.extend(sbom_lines(t.info, t.folder, "    "))
        lines.extend(_contents_lines(t.info, "    "))
    return lines


def info_lines(info: dict, package_dir=PACKAGE_DIR, environ=None) -> list:
    """What `info` prints: the build, its paths and every bundled component with its version; for a
    base wheel, then each installed target wheel and the one the tools use."""
    base = is_base(info)
    bin_dir = os.path.join(str(package_dir), info.get("bin_dir", "bin"))
    if base:
        title = "%s %s, the base wheel (GPU code: the target wheels below)" % (
            info.get("distribution", "?"), info.get("version", "?"))
    else:
        title = "%s %s for %s" % (info.get("distribution", "?"), info.get("version", "?"),
                                  info.get("gpu_target", "?"))
    built_from = provenance_line(info)
    lines = [title] + ([built_from] if built_from else []) + [
        "package:    %s" % package_dir,
        "tools:      %s (%s)" % (bin_dir, ", ".join(info.get("tools", [])) or "none"),
        "libraries:  %s" % ", ".join(os.path.normpath(os.path.join(str(package_dir), d))
                                     for d in info.get("library_dirs", [])),
    ]
    for var, rel in sorted(info.get("env", {}).items()):
        lines.append("%-11s %s (set for the tools)" % (var + ":", os.path.join(str(package_dir), rel)))
    lines.extend(sbom_lines(info, package_dir))
    lines.append("python:     %s (Python %s)" % (sys.executable, sys.version.split()[0]))
    lines.extend(_contents_lines(info))
    if base:
        environ = os.environ if environ is None else environ
        lines.extend(_target_lines(info, package_dir, environ))
        try:
            selection = select_target(info, environ, package_dir)
        except LauncherError as e:
            lines.append("the tools:  cannot start: %s" % e)
        else:
            lines.extend("warning:    %s" % w for w in selection.warnings)
            lines.append("the tools:  run %s" % describe_selection(info, selection))
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
