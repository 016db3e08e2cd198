import subprocess
import sys

import pytest

from builder.cli import main
from tests.helpers.archives import flip_byte, make_tarball

RECIPE = """
schema_version = 1
name = "demo"
version = "1.0"
license = "MIT"
license_files = ["LICENSE"]

[source]
kind = "archive"
url = "{url}"
sha256 = "{sha}"

[[build]]
step = "demo"
system = "cmake"
"""


@pytest.fixture
def project(tmp_path, file_server):
    sha = make_tarball(file_server.root / "demo-1.0.tar.gz", {"hello.txt": "hi\n", "LICENSE": "MIT\n"})
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "demo.toml").write_text(RECIPE.format(url=f"{file_server.url}/demo-1.0.tar.gz", sha=sha))
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
