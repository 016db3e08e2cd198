"""Version scheme, release notes and publishing checks (issue 15, items 1 and 5)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.version import Version

from builder.cli import cli
from builder.errors import ConfigurationError
from builder.package import project, rules
from builder.publish import checks, release_notes

FORMAT = rules.load_runtime_spec().version_format
COMMIT = "f1fabbd14a506076d4d0a9755811598220ee9e13"


def version(release="0.0.0+f1fabbd", build=0, date="2026-02-18"):
    return project.wheel_version(release, build, FORMAT, date)


# --------------------------------------------------------------------------- version scheme

def test_scheme_release_date_build():
    assert FORMAT == "{release}.{date}.post{build_number}"
    assert version(build=3) == "0.0.0.20260218.post3"
    assert version("1.2.3", 0, "2027-01-05") == "1.2.3.20270105.post0"


def test_newer_commit_and_rebuild_sort_higher():
    assert Version(version(date="2026-03-01", build=1)) > Version(version(date="2026-02-18", build=9))
    assert Version(version(date="2026-02-19")) > Version(version(date="2026-02-18"))
    assert Version(version(build=3)) > Version(version(build=2))
    assert Version(version(build=10)) > Version(version(build=9))
    # a new upstream release wins over any date of the old one
    assert Version(version("0.1.0", 0, "2026-01-01")) > Version(version("0.0.0", 5, "2026-12-31"))
    # and every one of them beats the old scheme's 0.0.0.post0
    assert Version(version()) > Version("0.0.0.post0")


@pytest.mark.parametrize("release", ["0.0.0+f1fabbd", "1.2.3", "1!2.0"])
def test_no_local_part_and_index_valid(release):
    text = version(release, 7)
    v = Version(text)
    assert v.local is None and "+" not in text and str(v) == text  # canonical, as an index stores it
    assert v.is_postrelease and not v.is_prerelease and not v.is_devrelease


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigurationError, match="needs the application recipe's date"):
        project.wheel_version("0.0.0", 0, FORMAT, None)
    with pytest.raises(ConfigurationError, match="pre-release a date"):
        version("2.0rc1")  # 2.0rc1.20260218 is no version
    with pytest.raises(ConfigurationError, match="not a valid version"):
        version("1.2.post1")
    with pytest.raises(ConfigurationError, match="local part"):
        project.wheel_version("1.0", 0, "{release}.post{build_number}+x")


def test_upstream_metadata_of_the_recipe():
    from builder.sources.recipe import load_recipes

    app = load_recipes()["moshi.cpp"]
    up = project.upstream_info(app)
    assert up == {"name": "moshi.cpp", "release": "0.0.0+f1fabbd", "commit": COMMIT, "date": "2026-02-18",
                  "url": "https://github.com/Codes4Fun/moshi.cpp"}
    assert project.upstream_urls(up) == {"moshi.cpp source": f"https://github.com/Codes4Fun/moshi.cpp/tree/{COMMIT}"}
    assert project.provenance_line(up, "7.2") == f"moshi.cpp {COMMIT} (2026-02-18), ROCm stack 7.2"
    assert f"moshi.cpp {COMMIT} (2026-02-18), ROCm stack 7.2" in project.provenance_paragraph(up, "7.2")
    text = project.render_pyproject(
        (project.TEMPLATE_DIR / "pyproject.toml.in").read_text(), name="moshi-rocm", version=version(build=3),
        summary="s", license="MIT", keywords=["moshi"], packages=["src/moshi_rocm"], scripts={},
        urls=project.upstream_urls(up), rocm_stack="7.2")
    import tomllib
    meta = tomllib.loads(text)["project"]
    assert meta["version"] == "0.0.0.20260218.post3"
    assert meta["urls"]["moshi.cpp source"].endswith(COMMIT) and "rocm-7.2" in meta["keywords"]


# --------------------------------------------------------------------------- tiny fake wheels

def fake_wheel(folder: Path, dist: str, ver: str, info: dict, pad: int = 0) -> Path:
    norm = dist.replace("-", "_")
    path = folder / f"{norm}-{ver}-py3-none-manylinux_2_39_x86_64.whl"
    package = "moshi_rocm" if info.get("kind") == "base" else f"moshi_rocm_{info.get('gpu_target')}"
    name = "_runtime.json" if info.get("kind") == "base" else "_target.json"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{package}/{name}", json.dumps({"distribution": dist, "version": ver, **info}))
        zf.writestr(f"{norm}-{ver}.dist-info/METADATA", f"Metadata-Version: 2.4\nName: {dist}\nVersion: {ver}\n")
        if pad:
            zf.writestr(f"{package}/pad.bin", b"\0" * pad, compress_type=zipfile.ZIP_STORED)
    return path


V = "0.0.0.20260218.post3"
UPSTREAM = {"name": "moshi.cpp", "release": "0.0.0+f1fabbd", "commit": COMMIT, "date": "2026-02-18",
            "url": "https://github.com/Codes4Fun/moshi.cpp"}
BUILD = {"rocm_stack": "7.2", "hip_version": "7.2.53211"}


@pytest.fixture
def wheelhouse(tmp_path):
    house = tmp_path / "wheelhouse"
    house.mkdir()
    fake_wheel(house, "moshi-rocm", V, {
        "kind": "base", "upstream": UPSTREAM, "build": BUILD,
        "components": [{"name": "moshi.cpp", "version": "0.0.0+f1fabbd", "license": "MIT"},
                       {"name": "ffmpeg", "version": "7.1.5", "license": "LGPL-2.1-or-later"}],
        "system_packages": [{"package": "libamdhip64-7", "version": "7.2.1-1", "license": "MIT",
                             "libraries": ["libamdhip64.so.7"]}]})
    for target in ("gfx1100", "gfx1030"):
        fake_wheel(house, f"moshi-rocm-{target}", V, {
            "kind": "target", "gpu_target": target, "upstream": UPSTREAM, "build": BUILD,
            "components": [{"name": "ggml", "version": "0.25.3", "license": "MIT"}],
            "system_packages": [{"package": "librocblas5", "version": "7.2.1-2", "license": "MIT",
                                 "libraries": ["librocblas.so.5"]}]})
    (house / "moshi_rocm-0.0.0.20260218.post3.log").write_text("not a wheel")
    return house


def test_release_notes(wheelhouse):
    result = CliRunner().invoke(cli, ["release-notes", str(wheelhouse)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith(f"# moshi-rocm {V}\n")
    assert f"Built from moshi.cpp {COMMIT} (2026-02-18), ROCm stack 7.2." in text
    for dist, kind in [("moshi-rocm", "base"), ("moshi-rocm-gfx1100", "target (gfx1100)"),
                       ("moshi-rocm-gfx1030", "target (gfx1030)")]:
        assert f"| {dist} | {V} | {kind} | " in text
    assert "| ffmpeg | 7.1.5 | LGPL-2.1-or-later | moshi-rocm |" in text
    assert "| ggml | 0.25.3 | MIT | moshi-rocm-gfx1030, moshi-rocm-gfx1100 |" in text
    assert "## Debian packages" in text
    assert "| libamdhip64-7 | 7.2.1-1 | MIT | moshi-rocm |" in text
    assert "| librocblas5 | 7.2.1-2 | MIT | moshi-rocm-gfx1030, moshi-rocm-gfx1100 |" in text
    assert text.index("## Wheels") < text.index("## Components") < text.index("## Debian packages")


def test_release_notes_refuse_a_foreign_wheel(tmp_path):
    with zipfile.ZipFile(tmp_path / "other-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("other/__init__.py", "")
    with pytest.raises(ConfigurationError, match="not a moshi-build wheel"):
        release_notes.release_notes(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigurationError, match="no wheels"):
        release_notes.release_notes(empty)


@pytest.mark.parametrize("document", ["[]", "null", '"text"', '{"kind": "base", "components": 5}',
                                      '{"kind": "base", "components": [5, null], "system_packages": "x", "upstream": 3}'])
def test_release_notes_of_a_hostile_wheel_json_are_one_line_or_skip_it(tmp_path, document):
    """Issue 24, item 10: no traceback on a _runtime.json that is not what we write."""
    path = tmp_path / "moshi_rocm-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("moshi_rocm/_runtime.json", document)
    try:
        text = release_notes.release_notes(tmp_path)
    except ConfigurationError as e:
        assert "not a JSON object" in str(e) and "\n" not in str(e)
    else:
        assert text.startswith("# moshi-rocm 1.0")


# --------------------------------------------------------------------------- publish-check

@pytest.mark.parametrize("text, size", [("100MB", 100_000_000), ("95 MiB", 95 * 2**20), ("1.5GB", 1_500_000_000),
                                        ("4096", 4096), ("10kB", 10_000)])
def test_parse_size(text, size):
    assert checks.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "100 parsecs", "0", "9" * 400 + "MB", "\u00b9MB"])
def test_parse_size_refuses(text):
    with pytest.raises(ConfigurationError):
        checks.parse_size(text)


def test_publish_check_size_fails_one_wheel_readably(wheelhouse):
    big = fake_wheel(wheelhouse, "moshi-rocm-gfx1201", V, {"kind": "target", "gpu_target": "gfx1201"}, pad=30_000)
    wheels = sorted(str(p) for p in wheelhouse.glob("*.whl"))
    result = CliRunner().invoke(cli, ["publish-check", *wheels, "--max-size", "20kB", "--no-twine"])
    assert result.exit_code == 1
    assert f"FAIL size: {big.name}: 0.0 MB, over the 0.02 MB an index file may have (--max-size)" in result.output
    assert (f"publish-check: 1 of 4 wheels cannot be published: {big.name}; nothing was uploaded"
            in result.output)
    assert result.output.count("PASS size:") == 3
    ok = CliRunner().invoke(cli, ["publish-check", *wheels, "--no-twine"])  # default 100MB
    assert ok.exit_code == 0 and "publish-check: 4 wheels ready to publish" in ok.output


def test_publish_check_reports_twine(wheelhouse):
    wheels = sorted(wheelhouse.glob("*.whl"))

    def fake_twine(path):
        bad = "gfx1030" in path.name
        return subprocess.CompletedProcess([], 1 if bad else 0,
                                           f"Checking {path.name}: FAILED\nERROR `long_description` has syntax errors"
                                           if bad else f"Checking {path.name}: PASSED", "")

    results = checks.check_wheels(wheels, 10**8, twine=True, run=fake_twine)
    failed = [r for r in results if not r.ok]
    assert len(results) == 6 and [r.check for r in failed] == ["twine"]
    assert failed[0].line.startswith("FAIL twine: moshi_rocm_gfx1030-")
    assert "long_description` has syntax errors" in failed[0].line
    assert all(r.check == "size" for r in checks.check_wheels(wheels, 10**8, twine=False, run=fake_twine))


@pytest.mark.skipif(not checks.twine_available(), reason="twine is not installed (the test extra has it)")
def test_real_twine_check_runs_on_each_wheel(wheelhouse):
    results = checks.check_wheels(sorted(wheelhouse.glob("*.whl"))[:1], 10**8, twine=True)
    assert [(r.check, r.ok) for r in results] == [("size", True), ("twine", False)]
    assert "long_description" in results[1].detail  # --strict: the fake wheel has no README
