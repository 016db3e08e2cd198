"""A static PEP 503 "simple" package index of a wheelhouse, for GitHub Pages or a directory.

  OUT/index.html                    a landing page: how to install from here
  OUT/simple/index.html             one link per project (PEP 503 normalized name)
  OUT/simple/<project>/index.html   one link per file, with a #sha256= fragment
  OUT/simple/<project>/<file>       the file itself, unless --base-url says where files live

With a base URL (e.g. a release's download address) the pages link there and no
file is copied: a Pages site is limited to about 1 GB, less than a release's wheels.

Each distribution has its own page: the base wheel moshi-rocm and every target wheel
moshi-rocm-<gfx> (docs/WHEEL-PAIR.md). The landing page's example names a project that
requires another one of the index (a target wheel: installing it brings the base).
"""

from __future__ import annotations

import dataclasses
import email.parser
import html
import os
import shutil
import time
import zipfile
from pathlib import Path
from urllib.parse import quote

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (InvalidSdistFilename, InvalidWheelFilename, canonicalize_name,
                             parse_sdist_filename, parse_wheel_filename)

from builder.common.files import sha256_file
from builder.errors import ConfigurationError

# PEP 629: the version of the simple API these pages follow.
REPOSITORY_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class Distribution:
    path: Path
    project: str               # PEP 503 normalized
    version: str
    sha256: str
    requires_python: str | None
    requires: tuple[str, ...] = ()   # PEP 503 normalized names of its Requires-Dist

    @property
    def filename(self) -> str:
        return self.path.name


def _wheel_metadata(path: Path) -> tuple[str | None, tuple[str, ...]]:
    """Requires-Python, and the normalized names of the Requires-Dist entries."""
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ConfigurationError(f"{path}: not a wheel (no single *.dist-info/METADATA); remove it from the wheelhouse")
        metadata = email.parser.HeaderParser().parsestr(z.read(names[0]).decode("utf-8"))
    requires = []
    for text in metadata.get_all("Requires-Dist") or []:
        try:
            requires.append(canonicalize_name(Requirement(text).name))
        except InvalidRequirement:
            continue  # only the landing page's example uses them
    return metadata.get("Requires-Python"), tuple(requires)


def read_distribution(path: Path) -> Distribution:
    try:
        if path.name.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(path.name)
            requires_python, requires = _wheel_metadata(path)
        else:
            name, version = parse_sdist_filename(path.name)
            requires_python, requires = None, ()
    except (InvalidWheelFilename, InvalidSdistFilename) as e:
        raise ConfigurationError(f"{path}: {e}; rename or remove it") from None
    except zipfile.BadZipFile:
        raise ConfigurationError(f"{path}: not a zip file; rebuild or remove it") from None
    return Distribution(path=path, project=canonicalize_name(name), version=str(version),
                        sha256=sha256_file(path), requires_python=requires_python, requires=requires)


def scan(wheelhouse: Path) -> list[Distribution]:
    """The wheels and sdists directly in `wheelhouse` (logs, rejected/ and the like are skipped)."""
    if not wheelhouse.is_dir():
        raise ConfigurationError(f"{wheelhouse} is not a directory; name the wheelhouse the wheels went to")
    files = sorted(p for p in wheelhouse.iterdir()
                   if p.is_file() and (p.name.endswith(".whl") or p.name.endswith(".tar.gz")))
    if not files:
        raise ConfigurationError(f"{wheelhouse} holds no .whl or .tar.gz; build the wheels first")
    return [read_distribution(p) for p in files]


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{REPOSITORY_VERSION}">',
        f"<title>{html.escape(title)}</title>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def root_page(projects: list[str]) -> str:
    links = [f'<a href="{quote(p)}/">{html.escape(p)}</a><br>' for p in projects]
    return _page("Simple index", links)


def project_page(project: str, dists: list[Distribution], base_url: str | None) -> str:
    links = []
    for d in sorted(dists, key=lambda d: d.filename):
        url = f"{base_url.rstrip('/')}/{quote(d.filename)}" if base_url else quote(d.filename)
        attrs = f' data-requires-python="{html.escape(d.requires_python)}"' if d.requires_python else ""
        links.append(f'<a href="{html.escape(url)}#sha256={d.sha256}"{attrs}>{html.escape(d.filename)}</a><br>')
    return _page(f"Links for {project}", [f"<h1>Links for {html.escape(project)}</h1>", *links])


def example_project(dists: list[Distribution]) -> str:
    """The project to name in the install example: the first that requires another project of
    the index (a target wheel, which brings its base), else the first."""
    projects = sorted({d.project for d in dists})
    dependent = sorted({d.project for d in dists if set(d.requires) & (set(projects) - {d.project})})
    return (dependent or projects)[0]


def landing_page(projects: list[str], example: str | None = None) -> str:
    example = example or projects[0]
    items = [f"<li><code>{html.escape(p)}</code></li>" for p in projects]
    return _page("moshi-build wheels", [
        "<h1>moshi-build wheels</h1>",
        '<p>A PEP 503 package index is at <a href="simple/">simple/</a>. Install with</p>',
        f"<pre>pip install --extra-index-url THIS_SITE/simple/ {html.escape(example)}</pre>",
        "<ul>", *items, "</ul>",
    ])


def _place(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)       # same file system: no copy of hundreds of MB
    except OSError:
        shutil.copy2(src, dest)


def write_index(dists: list[Distribution], out: Path, base_url: str | None = None) -> Path:
    """Write the site into `out` (its simple/ replaced whole); returns OUT/simple."""
    by_project: dict[str, list[Distribution]] = {}
    for d in dists:
        by_project.setdefault(d.project, []).append(d)
    projects = sorted(by_project)
    out.mkdir(parents=True, exist_ok=True)
    # Built beside the old index and swapped in, so a failure leaves the old one whole.
    staging = out / f".simple.{os.getpid()}-{time.time_ns()}.tmp"
    staging.mkdir()
    try:
        (staging / "index.html").write_text(root_page(projects), encoding="utf-8")
        for project in projects:
            pdir = staging / project
            pdir.mkdir()
            (pdir / "index.html").write_text(project_page(project, by_project[project], base_url),
                                            encoding="utf-8")
            if base_url is None:
                for d in by_project[project]:
                    _place(d.path, pdir / d.filename)
        simple = out / "simple"
        old = out / f".simple.{os.getpid()}-{time.time_ns()}.old"
        if simple.exists():
            os.replace(simple, old)
        os.replace(staging, simple)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (out / "index.html").write_text(landing_page(projects, example_project(dists)), encoding="utf-8")
    return out / "simple"


def build_index(wheelhouse: Path, out: Path, base_url: str | None = None) -> tuple[Path, list[Distribution]]:
    dists = scan(wheelhouse)
    return write_index(dists, out, base_url), dists
