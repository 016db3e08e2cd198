"""check/verify.py, the runner: the checks of checks/ in their order, each applied to the kinds of
wheel it names, and the layering of builder/check (nothing imports the runner; no function a
reader cannot follow)."""

from __future__ import annotations

import ast
import importlib
import json
import types
from pathlib import Path

from builder.check import verify
from builder.check.context import GPU_KINDS, KINDS, NO_GPU_CODE, Check
from builder.check.results import CheckResult, VerifyReport
from tests.helpers.imports import imported_modules

REPO = Path(__file__).resolve().parents[2]
CHECK_DIR = REPO / "builder" / "check"
ORDER = ["archive", "runtime-info", "elf-closure", "rpath", "backends", "gpu-code", "kernels", "code-selection",
         "standins", "build-paths", "licenses", "sbom", "manylinux", "glibc-floor"]


def test_the_checks_run_in_their_order_one_module_each():
    assert [c.name for c in verify.CHECKS] == ORDER
    modules = sorted(p.stem for p in (CHECK_DIR / "checks").glob("*.py") if p.stem != "__init__")
    assert modules == sorted(name.replace("-", "_") for name in ORDER)
    for stem in modules:
        module = importlib.import_module(f"builder.check.checks.{stem}")
        assert module.CHECK in verify.CHECKS and module.CHECK.name == module.NAME, stem
        assert module.__doc__ and module.__doc__.startswith(f"`moshi-build verify`'s {module.NAME} check"), stem


def test_a_base_wheel_skips_the_gpu_checks_with_one_summary():
    applies = {c.name: c.kinds for c in verify.CHECKS}
    assert {n for n, kinds in applies.items() if kinds != KINDS} == {"gpu-code", "kernels", "code-selection"}
    assert all(applies[n] == GPU_KINDS for n in ("gpu-code", "kernels", "code-selection"))

    def run(ctx):
        raise AssertionError("not run on a kind it does not apply to")

    check = Check("gpu-code", run, GPU_KINDS, NO_GPU_CODE)
    assert check.result(types.SimpleNamespace(kind="base")) == CheckResult("gpu-code", True, NO_GPU_CODE)


def test_the_output_of_the_cli():
    passed, failed = CheckResult("archive", True, "fine"), CheckResult("sbom", False, "none", ("none",))
    report = VerifyReport(Path("/w/moshi_rocm-1.0-py3-none-any.whl"), None, [passed, failed], 1.234, "base")
    assert verify.report_lines(report) == ["moshi_rocm-1.0-py3-none-any.whl (base wheel, 1.2 s)",
                                           "  PASS archive: fine", "  FAIL sbom: none"]
    doc = json.loads(verify.json_document([report]))
    assert doc == {"ok": False, "wheels": [{
        "wheel": "/w/moshi_rocm-1.0-py3-none-any.whl", "gpu_target": None, "ok": False, "seconds": 1.23,
        "kind": "base", "checks": [passed.to_json(), failed.to_json()]}]}


def test_nothing_in_check_imports_the_runner_and_no_check_imports_another():
    for path in sorted(CHECK_DIR.rglob("*.py")):
        if path.name != "verify.py":
            assert "builder.check.verify" not in imported_modules(path), path
        if path.parent.name == "checks":
            others = {m for m in imported_modules(path) if m.startswith("builder.check.checks")}
            assert not others, (path, others)


def test_no_function_over_100_lines():
    """A reader follows each function on a screen or two (issue 23)."""
    long = []
    for path in sorted(CHECK_DIR.rglob("*.py")) + [REPO / "builder" / "common" / "wheel_reader.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert long == []
