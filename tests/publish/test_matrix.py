"""`moshi-build matrix`: the GitHub Actions build matrix, through the real CLI."""

import json
import tomllib
from importlib import resources

import pytest

from builder.cli import main


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of `moshi-build ARGV`."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def table_rows():
    # Read the data file directly, so the expectations do not come from the code under test.
    text = resources.files("builder.resources").joinpath("targets.toml").read_text()
    return tomllib.loads(text)["target"]


def own_code_targets(family):
    return [t["name"] for t in table_rows() if t["family"] == family and "runs_as" not in t]


def test_target_list_gives_one_entry_per_target_in_order(capsys):
    code, out, err = run_cli(["matrix", "--gpu-targets", "gfx1100;gfx1030"], capsys)
    assert code == 0, err
    assert out.count("\n") == 1  # one line: the form $GITHUB_OUTPUT takes
    matrix = json.loads(out)
    assert [e["gpu_target"] for e in matrix["include"]] == ["gfx1100", "gfx1030"]
    assert [e["family"] for e in matrix["include"]] == ["rdna3", "rdna2"]
    # gfx1101's GPUs run gfx1100 code (runs_as in targets.toml): the gfx1100 wheel serves them
    assert "gfx1101" in matrix["include"][0]["serves"].split()
    assert "gfx1031" in matrix["include"][1]["serves"].split()


@pytest.mark.parametrize("family", ["rdna3", "rdna2"])
def test_family_gives_its_targets_with_code_of_their_own(family, capsys):
    code, out, err = run_cli(["matrix", "--family", family], capsys)
    assert code == 0, err
    entries = json.loads(out)["include"]
    expected = own_code_targets(family)
    assert expected  # the data has such targets, so the comparison below means something
    assert sorted(e["gpu_target"] for e in entries) == sorted(expected)
    assert {e["family"] for e in entries} == {family}
    members = {t["name"] for t in table_rows() if t["family"] == family}
    served = {s for e in entries for s in e["serves"].split()}
    assert served == members  # every GPU of the family has a wheel to install


def test_families_and_targets_combine_without_duplicates(capsys):
    code, out, err = run_cli(["matrix", "--family", "rdna3;rdna2", "--gpu-targets", "gfx1100"], capsys)
    assert code == 0, err
    names = [e["gpu_target"] for e in json.loads(out)["include"]]
    assert names[0] == "gfx1100" and names.count("gfx1100") == 1
    assert set(names) == {"gfx1100", *own_code_targets("rdna3"), *own_code_targets("rdna2")}
    code2, out2, _ = run_cli(["matrix", "--family", "rdna3", "--family", "rdna2"], capsys)
    code3, out3, _ = run_cli(["matrix", "--family", "rdna3 rdna2"], capsys)
    assert code2 == code3 == 0 and out2 == out3


def test_unknown_family_exits_10_with_one_line_naming_the_families(capsys):
    code, out, err = run_cli(["matrix", "--family", "rdna9"], capsys)
    assert code == 10
    assert out == ""
    assert err.count("\n") == 1
    assert "unknown GPU family 'rdna9'" in err and "rdna3" in err and "Traceback" not in err


def test_unknown_target_exits_10_with_one_line_naming_it(capsys):
    code, out, err = run_cli(["matrix", "--gpu-targets", "gfx1100;gfx1199"], capsys)
    assert code == 10
    assert out == ""
    assert err.count("\n") == 1
    assert "gfx1199" in err and "known targets" in err


def test_no_target_and_no_family_exits_2(capsys):
    code, out, err = run_cli(["matrix"], capsys)
    assert code == 2
    assert "--gpu-targets" in err and "--family" in err


def test_github_output_appends_matrix_line(tmp_path, monkeypatch, capsys):
    output = tmp_path / "github_output"
    output.write_text("earlier=1\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    code, out, err = run_cli(["matrix", "--github-output", "--gpu-targets", "gfx1030"], capsys)
    assert code == 0, err
    lines = output.read_text().splitlines()
    assert lines[0] == "earlier=1"
    name, _, value = lines[1].partition("=")
    assert name == "matrix"
    assert json.loads(value) == json.loads(out)
    assert [e["gpu_target"] for e in json.loads(value)["include"]] == ["gfx1030"]


def test_github_output_without_the_variable_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    code, out, err = run_cli(["matrix", "--github-output", "--family", "rdna3"], capsys)
    assert code == 2
    assert "GITHUB_OUTPUT" in err


def test_new_families_of_the_rocm_7_2_stack(capsys):
    code, out, err = run_cli(["matrix", "--family", "rdna4;rdna3.5;cdna3"], capsys)
    assert code == 0, err
    entries = json.loads(out)["include"]
    # gfx1150 and gfx1152 (Strix Point, Krackan) have no rocBLAS 7.2.4 kernels: no job for them
    assert [e["gpu_target"] for e in entries] == ["gfx1200", "gfx1201", "gfx1151", "gfx942"]
    assert [e["family"] for e in entries] == ["rdna4", "rdna4", "rdna3.5", "cdna3"]


def test_a_target_without_kernels_in_the_stack_exits_10(capsys):
    code, out, err = run_cli(["matrix", "--gpu-targets", "gfx1100;gfx1150"], capsys)
    assert code == 10 and out == "" and err.count("\n") == 1
    assert "gfx1150: rocBLAS of ROCm stack 7.2 ships no kernels for it" in err
    code, out, err = run_cli(["matrix", "--rocm", "6.4", "--gpu-targets", "gfx942"], capsys)
    assert code == 10 and "gfx942: rocBLAS of ROCm stack 6.4 ships no kernels for it" in err
    code, out, err = run_cli(["matrix", "--rocm", "6.4", "--family", "rdna4"], capsys)
    assert code == 10 and "no target of family 'rdna4' can be built with rocBLAS of ROCm stack 6.4" in err
