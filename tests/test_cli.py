import subprocess
import sys

import pytest

from builder.cli import main
from tests.helpers.archives import flip_byte, make_tarball
from tests.helpers.archives import DEMO_RECIPE



@pytest.fixture
def project(tmp_path, file_server):
    sha = make_tarball(file_server.root / "demo-1.0.tar.gz", {"hello.txt": "hi\n", "LICENSE": "MIT\n"})
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "demo.toml").write_text(DEMO_RECIPE.format(url=f"{file_server.url}/demo-1.0.tar.gz", sha=sha))
    (tmp_path / "patches").mkdir()
    common = ["--recipes-dir", str(recipes), "--patches-dir", str(tmp_path / "patches"),
              "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    return file_server, sha, common


def run(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    return e.value.code


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "builder", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("fetch", "build", "env", "targets"):
        assert cmd in out.stdout


def test_fetch_twice_second_run_needs_no_network(project, capsys):
    server, sha, common = project
    assert run(["fetch", *common]) == 0
    assert server.requests == ["/demo-1.0.tar.gz"]
    assert run(["fetch", "--offline", *common]) == 0
    assert server.requests == ["/demo-1.0.tar.gz"]
    assert "demo 1.0: verified" in capsys.readouterr().out


def test_flipped_byte_in_cache_exits_4_with_both_hashes(project, tmp_path, capsys):
    server, sha, common = project
    assert run(["fetch", *common]) == 0
    cached = tmp_path / "cache" / "downloads" / sha / "demo-1.0.tar.gz"
    flip_byte(cached)
    assert run(["fetch", "--offline", *common]) == 4
    err = capsys.readouterr().err
    assert str(cached) in err and sha in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert cached.exists()  # evidence is kept; the message says how to clear it


def test_unknown_component_exits_2(project, capsys):
    _, _, common = project
    assert run(["fetch", *common, "nosuch"]) == 2
    assert "unknown component nosuch; components: demo" in capsys.readouterr().err


def test_misspelled_recipe_exits_3(project, tmp_path, capsys):
    _, _, common = project
    path = tmp_path / "recipes" / "demo.toml"
    path.write_text(path.read_text().replace("sha256 =", "sah256 ="))
    assert run(["fetch", *common]) == 3
    err = capsys.readouterr().err
    assert str(path) in err and "'sah256'" in err and "allowed keys" in err


def test_offline_without_sources_exits_6(project, capsys):
    _, _, common = project
    assert run(["fetch", "--offline", *common]) == 6
    assert "--offline" in capsys.readouterr().err


def test_bad_source_override_exits_2(project, capsys):
    _, _, common = project
    assert run(["fetch", *common, "--source", "demo"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_project_recipes_check():
    assert run(["recipes", "check"]) == 0


def test_build_uses_the_same_cache_dir_for_its_environment(project, tmp_path, monkeypatch, capsys):
    """--cache-dir moves the environment too, not only sources and builds."""
    import builder.cli as cli_module

    seen = []

    def fake_get_environment(kind, envs_dir, **kw):
        seen.append(envs_dir)
        raise SystemExit(0)  # stop before anything is created

    monkeypatch.setattr(cli_module, "get_environment", fake_get_environment)
    _, _, common = project
    run(["build", "--gpu-targets", "gfx1100", *common])
    run(["env", "info", "--cache-dir", str(tmp_path / "other")])
    assert seen == [tmp_path / "cache" / "envs", tmp_path / "other" / "envs"]


# -- one rule for expected faults: one line, a documented exit code, no traceback ------------------

def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    return lines[0]


def test_bench_with_two_targets_is_a_usage_error(project, capsys):
    _, _, common = project
    assert run(["bench", "--gpu-target", "gfx1100;gfx1030", *common]) == 2
    assert "one target only, got 2 (gfx1100, gfx1030)" in capsys.readouterr().err


def test_a_mirror_that_does_not_exist_is_refused(project, capsys, monkeypatch):
    _, _, common = project
    assert run(["fetch", *common, "--mirror", "/nonexistent"]) == 2
    assert "--mirror /nonexistent: does not exist" in one_line_error(capsys)
    monkeypatch.setenv("MOSHI_BUILD_MIRROR", "/nonexistent")
    assert run(["fetch", *common]) == 2
    assert "MOSHI_BUILD_MIRROR /nonexistent" in one_line_error(capsys)


@pytest.mark.parametrize("args", [["x" * 131000], ["--source", "demo=" + "y" * 130990],
                                  ["--source", "z" * 131000]])
def test_a_value_of_131000_characters_is_shortened_in_the_error(project, capsys, args):
    _, _, common = project
    assert run(["fetch", *common, *args]) == 2
    line = one_line_error(capsys)
    assert len(line) < 600 and "\u2026" in line and "characters)" in line


@pytest.mark.parametrize("error, code, says", [
    (PermissionError(13, "Permission denied", "/cache/sources.lock.json"), 15, "Permission denied"),
    (OSError(30, "Read-only file system", "/cache/x"), 15, "read-only file system"),
    (IsADirectoryError(21, "Is a directory", "/cache/x"), 15, "a directory is where a file belongs"),
    (OSError(28, "No space left on device", "/cache/x"), 12, "no space left on the device holding /cache/x"),
    (UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte"), 2, "not UTF-8"),
])
def test_a_file_system_fault_anywhere_is_one_line_with_its_exit_code(project, capsys, monkeypatch, error, code, says):
    import builder.cli as cli_module

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli_module.sources, "fetch_all", fail)
    _, _, common = project
    assert run(["fetch", *common]) == code
    assert says in one_line_error(capsys)


def test_an_os_error_that_is_not_of_the_file_system_still_shows_its_traceback(project, monkeypatch):
    import builder.cli as cli_module

    def fail(*args, **kwargs):
        raise OSError("a bug, not a user's fault")

    monkeypatch.setattr(cli_module.sources, "fetch_all", fail)
    _, _, common = project
    with pytest.raises(OSError, match="a bug"):
        main(["fetch", *common])


def test_a_read_only_complete_cache_is_exit_15_naming_the_lock(project, capsys, monkeypatch):
    _, _, common = project
    assert run(["fetch", *common]) == 0
    capsys.readouterr()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr("builder.common.files.tempfile.mkstemp", read_only)
    assert run(["fetch", "--offline", *common]) == 15
    assert "sources.lock.json" in one_line_error(capsys)


def test_an_older_python_is_refused_in_one_line_before_the_imports():
    code = ("import sys; sys.version_info = (3, 11, 2, 'final', 0); sys.argv = ['moshi-build', '--help']; "
            "import runpy; runpy.run_module('builder', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 9
    assert out.stderr.startswith("moshi-build: error: this is Python 3.11.2, but moshi-build needs Python 3.11.4")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_pyproject_requires_the_python_with_safe_extraction():
    import tomllib
    from pathlib import Path

    import builder

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert data["project"]["requires-python"] == ">=" + ".".join(map(str, builder.MIN_PYTHON)) == ">=3.11.4"
    assert any(dep.startswith("hypothesis") for dep in data["project"]["optional-dependencies"]["test"])


def test_startup_sweeps_an_orphaned_staging_folder(project, tmp_path, capsys):
    import os
    import time

    _, _, common = project
    sources_dir = tmp_path / "cache" / "sources"
    old = sources_dir / ".demo-0123456789abcdef.abcd1234.tmp"
    fresh = sources_dir / ".demo-0123456789abcdef.efgh5678.tmp"
    for folder in (old, fresh):
        (folder / "src").mkdir(parents=True)
    t = time.time() - 3600
    os.utime(old, (t, t))
    os.utime(fresh, (time.time() + 60, time.time() + 60))  # newer than this process: not an orphan
    assert run(["fetch", *common]) == 0
    assert not old.exists() and fresh.exists()
    assert "interrupted run" in capsys.readouterr().err


def test_the_manual_documents_every_exit_code():
    import re
    from pathlib import Path

    from builder import errors

    page = (Path(__file__).resolve().parents[1] / "docs" / "EXIT-CODES.md").read_text()
    table = set(re.findall(r"^\| (\d+) \|", page.split("## moshi-build", 1)[1].split("\n## ", 1)[0], re.M))
    codes = {str(c.return_code) for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, errors.FatalError) and c is not errors.FatalError}
    assert codes <= table, codes - table
    assert "One rule for expected faults" in page


def test_a_build_number_of_4000_digits_is_refused_where_it_is_parsed(capsys):
    # probes F18a/F18c: accepted until the wheel (a 4,065-byte file name) was made
    assert run(["all", "--build-number", "9" * 4000, "--gpu-targets", "gfx1100",
                "--source", "moshi.cpp=/nonexistent-probe24"]) == 2
    err = capsys.readouterr().err
    assert "--build-number" in err and "0<=x<=999999999" in err and "Traceback" not in err
    assert max(len(line) for line in err.splitlines()) < 1000
