"""builder/common/resources.py: every shipped TOML has a schema and passes it; bad files are one line."""

from importlib import resources as importlib_resources

import pytest

from builder.common import resources
from builder.errors import ConfigurationError, RecipeError


def shipped_tomls() -> list[str]:
    return sorted(f.name[:-5] for f in importlib_resources.files("builder.resources").iterdir()
                  if f.name.endswith(".toml"))


def test_every_shipped_toml_has_a_schema_and_matches_it():
    names = shipped_tomls()
    assert {"environments", "runtime", "stacks", "targets", "verify"} <= set(names)
    for name in names:
        assert resources.load(name)["schema_version"] == 1, name


@pytest.mark.parametrize("content, message", [
    (b"schema_version = \n", "not valid TOML"),
    (b"\xff\xfe schema", "not UTF-8 text (byte 0); save it as UTF-8"),
    (b"schema_version = 1\n", "(top level): 'device_code' is a required property"),
    (b"schema_version = 1\nsurprise = 2\n[device_code]\nlibraries=['x']\n[build_paths]\nmarkers=[]\nmin_components=1\n",
     "unknown field 'surprise' in (top level); allowed keys: backends, build_paths, device_code, schema_version"),
])
def test_a_bad_file_is_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "verify.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as e:
        resources.load("verify", path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_the_caller_chooses_the_error_class(tmp_path):
    with pytest.raises(RecipeError, match="is a directory"):
        resources.read_toml(tmp_path, RecipeError)
    with pytest.raises(RecipeError, match="file not found"):
        resources.read_toml(tmp_path / "missing.toml", RecipeError)


def test_a_data_file_that_is_not_regular_is_refused_without_reading_or_blocking(tmp_path):
    # probes U10a (--recipe /dev/zero read without bound) and U10b (--recipe a FIFO: open blocked)
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):
        with pytest.raises(RecipeError, match="not a regular file"):
            resources.read_toml(path, RecipeError)


def test_a_data_file_larger_than_the_bound_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * resources.MAX_DATA_FILE + b"\n")
    with pytest.raises(RecipeError, match="larger than 4,194,304 bytes"):
        resources.read_toml(big, RecipeError)
