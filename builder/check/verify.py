"""Trust the artifact: check a built wheel without installing it (`moshi-build verify`).

One pass over the archive (wheel_contents.read_wheel) collects what every check needs: the
dynamic section, symbol versions and offload bundles of each ELF member, and the paths of
the build machine any member mentions. Then the checks run in this order, one module each
under checks/ (its docstring says what it proves):

  archive         the wheel reads as pip installs it
  runtime-info    _runtime.json (_target.json) names this wheel and its gfx target
  elf-closure     every DT_NEEDED and every dlopen'd library is where the loader looks
  rpath           RPATH/RUNPATH entries are $ORIGIN-relative and stay in the wheel
  backends        the ggml backends the tools load are there
  gpu-code        the libraries verify.toml names carry code objects for the target
  kernels         the kernel folder holds the target's files and no other target's
  code-selection  the wheel's own comgr gives the target's code object for every bundle
  standins        generated stand-in libraries are imported only by their consumer
  build-paths     no file mentions a directory of the build machine
  licenses        every component, system package and grafted library has its license
  sbom            the CycloneDX document names the wheel and every ELF file
  manylinux       the platform tag fits the symbol versions needed from the system
  glibc-floor     every file loads on the floor's glibc

Three kinds of wheel (docs/WHEEL-PAIR.md):

  self-contained  <package>/_runtime.json names a gpu_target: every check above
  base            moshi_rocm/_runtime.json has "kind": "base": checked on its own;
                  gpu-code, kernels and code-selection do not apply (it carries no GPU code)
  target          <folder>/_target.json has "kind": "target": checked together with the base
                  wheel of its version (beside it, or given: base=...), or it fails the
                  base-wheel check (pair.py) and nothing else is checked

verify_wheel() returns a VerifyReport; report_lines() and json_document() are the CLI's output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

from builder.check.checks import (archive, backends, build_paths, code_selection, elf_closure, glibc_floor,
                                  gpu_code, kernels, licenses, manylinux, rpath, runtime_info, sbom, standins)
from builder.check.context import Check, Context
from builder.check.pair import pair_with_base, remember_base, wheel_kind
from builder.check.policies import claimed_policy
from builder.check.results import CheckResult, VerifyReport, check_result
from builder.check.settings import (VerifySettings, build_dirs_of, build_path_needles, default_build_paths,
                                    load_settings)
from builder.check.wheel_contents import MAX_TEXT_BYTES, read_wheel
from builder.package import rules
from builder.package.rules import RuntimeSpec

__all__ = ["CHECKS", "MAX_TEXT_BYTES", "CheckResult", "VerifyReport", "VerifySettings", "build_dirs_of",
           "claimed_policy", "default_build_paths", "json_document", "load_settings", "not_a_wheel_entry", "read_wheel",
           "report_lines", "verify_wheel"]

CHECKS: tuple[Check, ...] = (
    archive.CHECK, runtime_info.CHECK, elf_closure.CHECK, rpath.CHECK, backends.CHECK, gpu_code.CHECK,
    kernels.CHECK, code_selection.CHECK, standins.CHECK, build_paths.CHECK, licenses.CHECK, sbom.CHECK,
    manylinux.CHECK, glibc_floor.CHECK)


def verify_wheel(path: Path, *, build_paths: Iterable[Path | str] = (),
                 spec: RuntimeSpec | None = None, settings: VerifySettings | None = None,
                 probe_root=None, base: Path | str | None = None) -> VerifyReport:
    """Run every check on the wheel at `path`.

    The wheel says what it should hold (its _runtime.json: target, dlopen rules, stand-ins,
    system packages); `spec` (runtime.toml) fills in what an older wheel's record lacks.
    build_paths: directories of the build machine no file may mention (build_path_needles())
    probe_root:  where the wheel's comgr can run (code_selection.ProbeRoot, or a callable that
                 makes one from the (major, minor) glibc the wheel's tag needs, when a check needs it)
    base:        the base wheel a target wheel is checked with (default: the one of its version
                 beside it); ignored for a base or self-contained wheel
    """
    start = time.monotonic()
    path = Path(path)
    spec = spec or rules.load_runtime_spec()
    settings = settings or load_settings()
    needles, generic = build_path_needles(build_paths, settings)
    contents = read_wheel(path, needles, max_elf_size=settings.max_elf_extract)
    kind, info, info_member = wheel_kind(contents, spec.package)
    target = info.get("gpu_target") if isinstance(info, dict) else None
    pair, paired = None, []
    # taken first: a target wheel that cannot be checked further still reports a broken archive
    archived = archive.archive_result(contents)
    if kind == "target":
        if info is None:
            failed = check_result(runtime_info.NAME, [f"{info_member} in {path.name} is not readable JSON: a target "
                                                    "wheel without its record cannot be checked"], "")
            return VerifyReport(path, None, [archived] * (not archived.ok) + [failed], time.monotonic() - start,
                                kind, None)
        result, pair, looked_at = pair_with_base(path, info, spec, needles, base)
        if pair is None:
            return VerifyReport(path, target, [archived] * (not archived.ok) + [result], time.monotonic() - start,
                                kind, looked_at)
        paired = [result]
    elif kind == "base":
        remember_base(path, needles, contents)      # the target wheels verified next read it as their base
    ctx = Context(contents=contents, spec=spec, settings=settings, info=info,
                  info_member=info_member, gpu_target=target, libs_dir=contents.report.libs_dir,
                  policy=claimed_policy(contents.report.platform_tags), needles=needles, generic=generic,
                  probe_root=probe_root, kind=kind, base=pair)
    checks = [archived] + paired + [check.result(ctx) for check in CHECKS if check is not archive.CHECK]
    return VerifyReport(path, target, checks, time.monotonic() - start, kind, pair.summary() if pair else None)


# --------------------------------------------------------------------------- output

def report_lines(report: VerifyReport) -> list[str]:
    """A wheel as `moshi-build verify` prints it: a line naming it, then one indented line per check."""
    return [f"{report.wheel.name} ({report.label}, {report.seconds:.1f} s)"] + [f"  {line}" for line in report.lines()]


def not_a_wheel_entry(path: Path | str, error: Exception) -> dict:
    """An argument that could not be read as a wheel, as an entry of the JSON document."""
    return {"wheel": str(path), "gpu_target": None, "ok": False, "error": str(error), "checks": []}


def json_document(reports: Sequence[VerifyReport | dict]) -> str:
    """`moshi-build verify --json`: one document for all the arguments, in their order
    (one that is not a wheel is its not_a_wheel_entry())."""
    entries = [r if isinstance(r, dict) else r.to_json() for r in reports]
    return json.dumps({"ok": all(e["ok"] for e in entries), "wheels": entries}, indent=2)
