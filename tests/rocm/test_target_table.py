"""The README's GPU table (builder/rocm/target_table.py, `moshi-build targets --markdown`): made
from the data alone, the same targets as the CI matrix, and the README holds its current output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from builder import cli as cli_module
from builder.errors import TargetError
from builder.rocm import target_table
from builder.envs import get_stack
from builder.rocm.targets import parse_table, targets_in_family

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
WORKFLOW = REPO / "ci" / "github" / "workflows" / "wheels.yml"
START, END = "<!-- gpu-table:start -->", "<!-- gpu-table:end -->"


def small_table():
    return parse_table({"schema_version": 1, "target": [
        {"name": "gfx900", "family": "gcn5", "gpus": ["Vega 64"], "gfx_target_version": 90000},
        {"name": "gfx90c", "family": "gcn5", "gpus": ["Renoir APU"], "gfx_target_version": 90012,
         "runs_as": {"target": "gfx900", "hsa_override_gfx_version": "9.0.0"}},
        {"name": "gfx1030", "family": "rdna2", "gpus": ["RX 6800", "RX 6900 XT"], "gfx_target_version": 100300},
        {"name": "gfx1031", "family": "rdna2", "gpus": ["RX 6700 XT"], "gfx_target_version": 100301,
         "runs_as": {"target": "gfx1030", "hsa_override_gfx_version": "10.3.0"}},
        {"name": "gfx1100", "family": "rdna3", "gpus": ["RX 7900 XTX | XT"], "gfx_target_version": 110000},
    ]}, "test")


def run(args: list[str]):
    return CliRunner().invoke(cli_module.cli, args, catch_exceptions=False)


def test_one_row_per_wheel_and_per_gpu_that_runs_its_code():
    rows = target_table.gpu_rows(["gfx1100", "gfx1030"], small_table())
    assert [(r.target, r.wheel, r.override) for r in rows] == [
        ("gfx1030", "moshi-rocm-gfx1030", ""),
        ("gfx1031", "moshi-rocm-gfx1030", "10.3.0"),   # runs gfx1030's code, after its row
        ("gfx1100", "moshi-rocm-gfx1100", ""),
    ]   # gfx900 gets no wheel here, so neither it nor gfx90c (runs as gfx900) has a row
    assert rows[0].gpus == "RX 6800, RX 6900 XT"


def test_the_distribution_name_comes_from_the_caller():
    rows = target_table.gpu_rows(["gfx900"], small_table(), distribution_for=lambda t: f"other-{t}")
    assert [(r.target, r.wheel) for r in rows] == [("gfx900", "other-gfx900"), ("gfx90c", "other-gfx900")]


def test_markdown_is_a_table_with_the_pipes_of_a_name_escaped():
    text = target_table.markdown(target_table.gpu_rows(["gfx1100", "gfx1030"], small_table()))
    lines = text.splitlines()
    assert lines[0] == "| GPU | gfx | pip install | HSA_OVERRIDE_GFX_VERSION |"
    assert lines[1] == "| --- | --- | --- | --- |"
    assert lines[3] == "| RX 6700 XT | gfx1031 | `moshi-rocm-gfx1030` | 10.3.0 |"
    assert lines[4] == "| RX 7900 XTX \\| XT | gfx1100 | `moshi-rocm-gfx1100` |  |"
    assert not text.endswith("\n")


def test_an_unknown_wheel_target_is_refused():
    with pytest.raises(TargetError, match="gfx9999"):
        target_table.gpu_rows(["gfx9999"], small_table())


def test_the_families_are_the_workflow_default():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))   # YAML 1.1 reads the key `on` as true
    default = on["workflow_dispatch"]["inputs"]["families"]["default"]
    assert tuple(default.split(";")) == target_table.WHEEL_FAMILIES


@pytest.mark.parametrize("rocm", ["7.2", "6.4"])
def test_the_wheels_are_the_targets_of_the_ci_matrix(rocm):
    """Each wheel of the table is one the CI matrix builds for the default families."""
    table = run(["targets", "--markdown", "--rocm", rocm])
    assert table.exit_code == 0, table.output
    wheels = {m for m in re.findall(r"`moshi-rocm-(gfx\w+)`", table.output)}
    kernels = set(get_stack(rocm).rocblas_targets)
    families = [f for f in target_table.WHEEL_FAMILIES
                if any(t in kernels for t in targets_in_family(f))]
    matrix = run(["matrix", "--rocm", rocm, "--family", ";".join(families)])
    assert matrix.exit_code == 0, matrix.output
    assert wheels == {e["gpu_target"] for e in json.loads(matrix.output)["include"]}


def test_markdown_needs_no_build_environment(tmp_path, monkeypatch):
    def no_environment(*args, **kwargs):
        raise AssertionError("targets --markdown looked for a build environment")

    monkeypatch.setattr(cli_module, "get_environment", no_environment)
    cache = tmp_path / "cache"
    result = run(["targets", "--markdown", "--env", "debian", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("| GPU |")
    assert not cache.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_readme_table_is_the_commands_output():
    text = README.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    in_readme = text.split(START, 1)[1].split(END, 1)[0].strip()
    result = run(["targets", "--markdown"])
    assert result.exit_code == 0, result.output
    assert in_readme == result.output.strip(), (
        "README.md's GPU table is out of date: paste `moshi-build targets --markdown` between "
        f"{START} and {END}")
    # the rows users look for: a GPU with a wheel of its own, and one running another's code
    assert "| gfx1100 | `moshi-rocm-gfx1100` |  |" in in_readme
    assert "| Radeon 780M/760M (Ryzen 7040/8040 APU, Phoenix) | gfx1103 | `moshi-rocm-gfx1100` | 11.0.0 |" in in_readme
