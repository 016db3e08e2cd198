import re
from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.sources.recipe import (
    ArchiveSource, DebianSource, GitSource, PypiSource, load_recipe, load_recipes, topological_steps, all_steps,
)

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
schema_version = 1
name = "{name}"
version = "1.0"
license = "MIT"
license_files = ["LICENSE"]

[source]
kind = "archive"
url = "https://example.invalid/{name}-1.0.tar.gz"
sha256 = "{sha}"

[[build]]
step = "{name}"
system = "cmake"
{extra}
"""


def write(tmp_path: Path, name: str = "demo", sha: str = "a" * 64, extra: str = "", text: str | None = None) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text if text is not None else MINIMAL.format(name=name, sha=sha, extra=extra))
    return path


def test_project_recipes_load_into_typed_objects():
    recipes = load_recipes()
    assert set(recipes) == {"sentencepiece", "ffmpeg", "opus", "ggml", "sdl2", "moshi.cpp"}
    assert isinstance(recipes["ffmpeg"].source, ArchiveSource)
    assert isinstance(recipes["sdl2"].source, DebianSource) and recipes["sdl2"].source.package == "libsdl2"
    # Audio only, no D-Bus: the grafted distribution SDL2 crashed in SDL_Init.
    sdl_opts = all_steps(recipes)["sdl2"].options
    assert "-DSDL_VIDEO=OFF" in sdl_opts and "-DSDL_DBUS=OFF" in sdl_opts
    assert "sdl2" in all_steps(recipes)["moshi.cpp"].depends
    # .opus output needs libopus: FFmpeg's own Opus encoder is experimental and 48 kHz only.
    assert "opus" in all_steps(recipes)["ffmpeg"].depends and "--enable-libopus" in ffmpeg_opts_of(recipes)
    assert isinstance(recipes["sentencepiece"].source, PypiSource)
    assert isinstance(recipes["ggml"].source, PypiSource)
    assert isinstance(recipes["moshi.cpp"].source, GitSource)
    assert recipes["moshi.cpp"].source.commit == "f1fabbd14a506076d4d0a9755811598220ee9e13"
    hip = all_steps(recipes)["ggml-hip"]
    assert hip.per_target and "ggml-core" in hip.depends
    # Every listed patch exists (load checks) and FFmpeg stays LGPL.
    ffmpeg_opts = " ".join(all_steps(recipes)["ffmpeg"].options)
    assert "--enable-gpl" not in ffmpeg_opts and "--enable-nonfree" not in ffmpeg_opts


def ffmpeg_opts_of(recipes):
    return all_steps(recipes)["ffmpeg"].options


def test_steps_sort_dependencies_first():
    order = [s.step for s in topological_steps(all_steps(load_recipes()))]
    assert order.index("ggml-core") < order.index("ggml-hip")
    assert order.index("ffmpeg") < order.index("moshi.cpp")


def test_misspelled_field_names_file_field_and_allowed_keys(tmp_path):
    path = write(tmp_path, text=MINIMAL.format(name="demo", sha="a" * 64, extra="").replace("sha256 =", "sah256 ="))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert str(path) in msg and "'sah256'" in msg
    assert "allowed keys: filename, kind, sha256, subdirectory, url" in msg


def test_misspelled_top_level_field(tmp_path):
    path = write(tmp_path, extra="")
    path.write_text(path.read_text().replace("license_files", "licence_files"))
    with pytest.raises(RecipeError, match=r"'licence_files'.*allowed keys: .*license_files"):
        load_recipe(path)


def test_runtime_dlopen_is_no_longer_a_recipe_field(tmp_path):
    """runtime.toml's [[dlopen]] is the only list of dlopen'd libraries: a recipe's [runtime] fails, saying so."""
    path = write(tmp_path)
    path.write_text(path.read_text() + '\n[runtime]\ndlopen = ["libamd_comgr.so.3"]\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: unknown field 'runtime': ")
    assert "builder/resources/runtime.toml" in msg and "[[dlopen]]" in msg


def test_project_recipes_have_no_dlopen():
    assert not any(hasattr(r, "dlopen") for r in load_recipes().values())


def test_misspelled_build_field(tmp_path):
    path = write(tmp_path, extra='optoins = ["-DX=1"]')
    with pytest.raises(RecipeError, match=r"'optoins' in build\[0\]; allowed keys: .*options"):
        load_recipe(path)


def test_bad_checksum_format(tmp_path):
    path = write(tmp_path, sha="not-a-hash")
    with pytest.raises(RecipeError, match=r"source.sha256: 'not-a-hash' does not match"):
        load_recipe(path)


def test_git_source_needs_a_full_commit_id(tmp_path):
    text = MINIMAL.format(name="demo", sha="a" * 64, extra="").replace(
        'kind = "archive"\nurl = "https://example.invalid/demo-1.0.tar.gz"\nsha256 = "' + "a" * 64 + '"',
        'kind = "git"\nurl = "https://example.invalid/demo"\ncommit = "main"',
    )
    path = write(tmp_path, text=text)
    with pytest.raises(RecipeError, match=r"source.commit: 'main' does not match"):
        load_recipe(path)


def test_unknown_source_kind(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace('kind = "archive"', 'kind = "svn"'))
    with pytest.raises(RecipeError, match=r"source.kind: 'svn' is not one of"):
        load_recipe(path)


def test_invalid_toml(tmp_path):
    path = write(tmp_path, text="name = ")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(path)


def test_name_must_match_file(tmp_path):
    path = write(tmp_path)
    path.rename(tmp_path / "other.toml")
    with pytest.raises(RecipeError, match="does not match the file name"):
        load_recipe(tmp_path / "other.toml")


def test_missing_patch_file(tmp_path):
    path = write(tmp_path, extra="")
    path.write_text(path.read_text() + '\n[[patches]]\nfile = "0001-fix.patch"\nsha256 = "' + "b" * 64 + '"\n')
    with pytest.raises(RecipeError, match="patch 0001-fix.patch is listed but"):
        load_recipe(path, patches_dir=tmp_path / "patches")


def test_unknown_dependency_and_cycle(tmp_path):
    write(tmp_path, "a", extra='depends = ["b"]')
    write(tmp_path, "b", extra='depends = ["zzz"]')
    with pytest.raises(RecipeError, match="depends on unknown step 'zzz'"):
        load_recipes(tmp_path, tmp_path)
    write(tmp_path, "b", extra='depends = ["a"]')
    with pytest.raises(RecipeError, match="cycle"):
        load_recipes(tmp_path, tmp_path)


def test_collect_install_needs_rules(tmp_path):
    path = write(tmp_path, extra='install = "collect"')
    with pytest.raises(RecipeError, match="no collect rules"):
        load_recipe(path)


# --------------------------------------------------------------------------- date (the wheel version's)

def with_top(tmp_path: Path, lines: str, name: str = "demo") -> Path:
    text = MINIMAL.format(name=name, sha="a" * 64, extra="").replace('version = "1.0"\n', f'version = "1.0"\n{lines}\n')
    return write(tmp_path, name, text=text)


def test_the_application_recipe_records_its_commit_and_date():
    recipes = load_recipes()
    app = recipes["moshi.cpp"]
    # git show -s --format=%cs f1fabbd14a506076d4d0a9755811598220ee9e13
    assert app.date == "2026-02-18" and app.commit == "f1fabbd14a506076d4d0a9755811598220ee9e13"
    assert recipes["ffmpeg"].date is None and recipes["ffmpeg"].commit is None  # optional for a library
    testapp = load_recipe(REPO / "tests" / "fixtures" / "testapp" / "testapp.toml")
    assert testapp.role == "application" and testapp.date


def test_date_is_validated(tmp_path):
    assert load_recipe(with_top(tmp_path, 'date = "2024-02-29"')).date == "2024-02-29"
    for bad, complaint in [('"2026-2-18"', "date"), ('"18.02.2026"', "date"), ("20260218", "date"),
                           ('"2025-02-29"', "not a calendar date"), ('"2025-13-01"', "not a calendar date"),
                           ('"2999-01-01"', "in the future"), ('"1969-12-31"', "before 1970")]:
        with pytest.raises(RecipeError, match=complaint):
            load_recipe(with_top(tmp_path, f"date = {bad}"))


def test_an_application_needs_a_date(tmp_path):
    with pytest.raises(RecipeError, match=r"application recipe needs date = \"YYYY-MM-DD\""):
        load_recipe(with_top(tmp_path, 'role = "application"'))
    recipe = load_recipe(with_top(tmp_path, 'role = "application"\ndate = "2026-02-18"'))
    assert recipe.date == "2026-02-18" and recipe.commit is None  # an archive source has no commit


@pytest.mark.parametrize("url", ["--upload-pack=touch pwned", "-u touch", "ext::sh -c touch% pwned",
                                 "https://example.com/x y"])
def test_a_git_url_that_is_an_option_or_a_command_is_refused(tmp_path, url):
    """Issue 24, item 1: git would read "--upload-pack=..." as an option (fetch also passes "--")."""
    path = tmp_path / "demo.toml"
    path.write_text(f'''schema_version = 1
name = "demo"
version = "1.0"
license = "MIT"
license_files = ["LICENSE"]
[source]
kind = "git"
url = "{url}"
commit = "{'0' * 40}"
[[build]]
step = "demo"
system = "cmake"
''')
    with pytest.raises(RecipeError, match="source.url"):
        load_recipe(path)


@pytest.mark.parametrize("field, value, says", [
    ("subdirectory", '"../../../etc"', "source.subdirectory"),
    ("subdirectory", '"/etc"', "source.subdirectory"),
    ("license_files", '["../../../../etc/shadow"]', "leaves the source archive"),
    ("license_files", '["/etc/shadow"]', "license_files[0]"),
    ("collect", '[{ from = "/etc/*", into = "bin" }]', "collect[0].from"),
    ("collect", '[{ from = "bin/*", into = "../.." }]', "collect[0].into"),
])
def test_path_fields_that_leave_their_tree_are_refused(tmp_path, field, value, says):
    """Issue 24, item 15: subdirectory, license_files and collect stay inside their trees."""
    source = 'kind = "archive"\nurl = "https://example.com/demo-1.0.tar.gz"\n' + f'sha256 = "{"a" * 64}"\n'
    top, build = 'license_files = ["LICENSE"]\n', ""
    if field == "subdirectory":
        source += f"subdirectory = {value}\n"
    elif field == "license_files":
        top = f"license_files = {value}\n"
        source += 'subdirectory = "demo-1.0"\n'
    else:
        build = f'install = "collect"\ncollect = {value}\n'
    path = tmp_path / "demo.toml"
    path.write_text(f'schema_version = 1\nname = "demo"\nversion = "1.0"\nlicense = "MIT"\n{top}'
                    f'[source]\n{source}[[build]]\nstep = "demo"\nsystem = "cmake"\n{build}')
    with pytest.raises(RecipeError, match=re.escape(says)):
        load_recipe(path)
