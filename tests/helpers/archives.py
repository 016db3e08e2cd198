"""Source archives and recipes for the fetch tests: a small tarball, a damaged copy, a demo recipe."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from builder.sources.recipe import parse_recipe


def make_tarball(path: Path, files: dict[str, str], top: str = "demo-1.0") -> str:
    """Write a .tar.gz holding `files` under `top`/; returns its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path) -> None:
    """Flip one bit in the middle of a file (a corrupted download or mirror copy)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def recipe_for(tmp_path: Path, source: dict, patches: list[dict] = (), name: str = "demo"):
    """A one-step recipe for `source` (the [source] table), written as if at tmp_path/<name>.toml."""
    data = {
        "schema_version": 1, "name": name, "version": "1.0", "license": "MIT",
        "license_files": ["LICENSE"], "source": source, "patches": list(patches),
        "build": [{"step": name, "system": "cmake"}],
    }
    return parse_recipe(data, tmp_path / f"{name}.toml", tmp_path / "patches")


# The same one-step recipe as TOML text, for tests that write a recipes folder for the CLI.
DEMO_RECIPE = """schema_version = 1
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
