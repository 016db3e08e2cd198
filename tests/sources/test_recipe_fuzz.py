"""Property tests: the recipe loader reads files a user writes (--recipe, recipes/); whatever the
bytes or the parsed values, the answer is a recipe or a RecipeError (exit 3), never another exception."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, example, given, settings, strategies as st

from builder.errors import RecipeError
from builder.sources.recipe import load_recipe, parse_recipe
from tests.helpers.archives import DEMO_RECIPE

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

VALID = {
    "schema_version": 1, "name": "demo", "version": "1.0", "license": "MIT", "license_files": ["LICENSE"],
    "source": {"kind": "archive", "url": "https://example.invalid/demo-1.0.tar.gz", "sha256": "a" * 64},
    "patches": [],
    "build": [{"step": "demo", "system": "cmake", "options": ["-DX=1"], "env": {"A": "b"}}],
}
VALID_TEXT = DEMO_RECIPE.format(url="https://example.invalid/demo-1.0.tar.gz", sha="a" * 64)

# Pieces TOML is made of, so that random text gets past the first character now and then.
TOKENS = ["\n", " ", "=", "[", "]", "[[", "]]", "{", "}", ",", ".", '"', "'", '"""', "#", "\\", "\\u00e9",
          "name", "source", "kind", "build", "step", "system", "patches", "file", "sha256", "url", "version",
          "1", "-1", "1e400", "nan", "true", "1979-05-27", "archive", "git", "local", "pypi", "debian",
          "cmake", "demo", "é", "\x00", "\x7f", "\ud7ff", "\t", "\r\n"]
toml_ish = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def loads_or_refuses(path, patches_dir):
    try:
        recipe = load_recipe(path, patches_dir)
    except RecipeError as e:
        assert str(e) and "\n" not in str(e).strip()
        return None
    assert recipe.name == path.stem
    return recipe


def parses_or_refuses(data, tmp_path):
    try:
        parse_recipe(data, tmp_path / "demo.toml", tmp_path / "patches")
    except RecipeError as e:
        assert str(e)


@FUZZ
@given(raw=st.binary(max_size=400))
@example(raw=b"\xff\xfe")
@example(raw=b"x = " + b"[" * 5000 + b"]" * 5000)
@example(raw=b"a = {" * 3000)
def test_random_bytes(tmp_path, raw):
    path = tmp_path / "demo.toml"
    path.write_bytes(raw)
    loads_or_refuses(path, tmp_path / "patches")


@FUZZ
@given(text=toml_ish)
def test_toml_ish_text(tmp_path, text):
    path = tmp_path / "demo.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    loads_or_refuses(path, tmp_path / "patches")


@FUZZ
@given(st.data())
def test_a_valid_recipe_with_random_bytes_spliced_in(tmp_path, data):
    text = VALID_TEXT.encode()
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 8))
    junk = data.draw(st.binary(max_size=8) | toml_ish.map(str.encode))
    path = tmp_path / "demo.toml"
    path.write_bytes(text[:at] + junk + text[at + cut:])
    loads_or_refuses(path, tmp_path / "patches")


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_random_dicts(tmp_path, data):
    parses_or_refuses(data, tmp_path)


@st.composite
def mutated(draw):
    """The valid recipe with one value somewhere replaced by another of any type."""
    data = copy.deepcopy(VALID)
    node = data
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        node[key] = draw(json_values | st.text(max_size=30))
        break
    if draw(st.booleans()):
        data["source"] = draw(st.sampled_from([
            {"kind": "pypi", "package": "demo", "version": "1.0", "filename": "demo-1.0.tar.gz", "sha256": "b" * 64},
            {"kind": "debian", "package": "libdemo", "version": "1.0-1", "filename": "demo_1.0.orig.tar.gz",
             "sha256": "c" * 64},
            {"kind": "git", "url": "https://example.invalid/demo.git", "commit": "d" * 40},
            {"kind": "local", "path": draw(st.text(max_size=20))},
            {"kind": "archive", "url": "https://example.invalid/" + draw(st.text(max_size=20)), "sha256": "a" * 64},
        ]))
    if draw(st.booleans()):
        data["patches"] = [{"file": draw(st.text(max_size=20)), "sha256": "e" * 64}]
    return data


def _with_source(source):
    data = copy.deepcopy(VALID)
    data["source"] = source
    return data


@FUZZ
@given(mutated())
@example(_with_source({"kind": "local", "path": "a\x00b"}))
@example(_with_source({"kind": "local", "path": "x" * 5000}))
@example(_with_source({"kind": "archive", "url": "https://example.invalid/../..", "sha256": "a" * 64}))
@example(_with_source({"kind": "archive", "url": "https://example.invalid/", "sha256": "a" * 64,
                       "filename": "../../../etc/x"}))
@example(_with_source({"kind": "pypi", "package": "demo", "version": "1", "filename": "../x.tar.gz",
                       "sha256": "a" * 64}))
def test_a_valid_recipe_with_one_value_changed(tmp_path, data):
    parses_or_refuses(data, tmp_path)


def test_a_file_name_that_leaves_the_cache_folder_is_refused(tmp_path):
    for source in ({"kind": "archive", "url": "https://example.invalid/a", "sha256": "a" * 64,
                    "filename": "../../../etc/x"},
                   {"kind": "archive", "url": "https://example.invalid/..", "sha256": "a" * 64}):
        try:
            parse_recipe(_with_source(source), tmp_path / "demo.toml", tmp_path / "patches")
        except RecipeError as e:
            assert "not a plain file name" in str(e)
        else:
            raise AssertionError(f"accepted {source}")


def test_the_valid_recipe_itself_loads(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text(VALID_TEXT)
    assert loads_or_refuses(path, tmp_path / "patches").version == "1.0"
    parse_recipe(VALID, tmp_path / "demo.toml", tmp_path / "patches")
