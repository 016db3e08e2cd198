"""The one loader for the data the builder ships and reads: TOML checked against a JSON schema.

Every resource builder/resources/NAME.toml has NAME.schema.json beside it; a file the
user points at (--targets, a recipe) is checked against the same schema. A problem is
one line: the file, where in it, and what is wrong, raised as the caller's error class
(RecipeError for recipes, ConfigurationError for the rest), so each keeps its exit code.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import tomllib
from importlib import resources
from pathlib import Path
from typing import Mapping

import jsonschema

from builder.errors import ConfigurationError, FatalError, shorten

PACKAGE = "builder.resources"


@functools.cache
def schema(name: str) -> dict:
    """builder/resources/NAME.schema.json, parsed."""
    return json.loads(resources.files(PACKAGE).joinpath(f"{name}.schema.json").read_text())


def packaged_text(filename: str) -> str:
    return resources.files(PACKAGE).joinpath(filename).read_text()


def field_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path]
    return ".".join(parts).replace(".[", "[") or "(top level)"


def describe(error: jsonschema.ValidationError, moved: Mapping[str, str] | None = None) -> str:
    """A schema violation as: field, what is wrong, what was expected. `moved` names
    top-level fields a format no longer has, with where what they said lives now."""
    where = field_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        gone = [moved[e] for e in extra if not error.absolute_path and e in (moved or {})]
        if gone:
            return f"unknown field {shorten(', '.join(repr(e) for e in extra))}: {'; '.join(gone)}"
        return (f"unknown field {shorten(', '.join(repr(e) for e in extra))} in {where}; "
                f"allowed keys: {', '.join(allowed)}")
    if error.validator == "pattern" and error.schema.get("$ref") is None:
        return f"{where}: {shorten(repr(error.instance))} does not match {error.schema['pattern']!r}"
    if error.validator in ("enum", "const"):
        return f"{where}: {shorten(repr(error.instance))} is not one of {error.validator_value!r}"
    return f"{where}: {shorten(error.message)}"


def most_specific(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    """The deepest error names the field the author actually got wrong."""
    def depth(e: jsonschema.ValidationError) -> int:
        return max([len(e.absolute_path)] + [len(sub.absolute_path) for sub in e.context or ()])

    error = max(errors, key=depth)
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def validate(data: dict, schema_name: str, where: str, error: type[FatalError] = ConfigurationError,
             moved: Mapping[str, str] | None = None) -> dict:
    """`data` if it matches NAME.schema.json; else `error` naming the first problem."""
    try:
        problems = list(jsonschema.Draft202012Validator(schema(schema_name)).iter_errors(data))
    except RecursionError:
        raise error(f"{where}: values nested too deeply to check; flatten them") from None
    if problems:
        raise error(f"{where}: {describe(most_specific(problems), moved)}")
    return data


def parse_toml(text: str, where: str, error: type[FatalError] = ConfigurationError) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{where}: not valid TOML: {e}; fix the syntax") from None
    except RecursionError:
        raise error(f"{where}: not valid TOML: arrays or tables nested too deeply; fix the syntax") from None


# The largest TOML or JSON data file a user names (a recipe is a few KB).
MAX_DATA_FILE = 4 << 20


def read_data_file(path: Path, error: type[FatalError] = ConfigurationError, what: str = "TOML",
                   limit: int = MAX_DATA_FILE) -> str:
    """The text of a data file the user names: only a regular file (stat first: a FIFO is never
    opened, a device never read), at most `limit` bytes, UTF-8; anything else is `error`, one line."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{path}: is a directory, not a {what} file")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file (a device, a FIFO or a socket); name a {what} file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):     # replaced between the two looks
                raise error(f"{path}: not a regular file; name a {what} file")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read it: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{path}: larger than {limit:,} bytes, more than a {what} file of ours holds; "
                    "name the right file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def read_toml(path: Path, error: type[FatalError] = ConfigurationError) -> dict:
    """A TOML file the user names: not a regular file, too large, unreadable, not UTF-8 or not
    TOML is `error`, one line."""
    return parse_toml(read_data_file(Path(path), error), str(path), error)


def load(name: str, path: Path | None = None, error: type[FatalError] = ConfigurationError) -> dict:
    """resources/NAME.toml (or the file at `path`), validated against NAME.schema.json."""
    if path is None:
        where = f"builder/resources/{name}.toml"
        data = parse_toml(packaged_text(f"{name}.toml"), where, error)
    else:
        where = str(path)
        data = read_toml(Path(path), error)
    return validate(data, name, where, error)
