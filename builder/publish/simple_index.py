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

  OUT/.moshi-build-index.json       the files this command wrote, with their sha256

`index` never removes or replaces a file it did not write: a re-index replaces
its own pages and files (each atomically) and removes those of its files the new
index no longer lists (if they still hold what it wrote); anything else in OUT
(a CHANGELOG.txt, the site's other pages) stays. A file of someone else's where
the index needs to write is refused, and so is an output folder that holds the
wheelhouse (the index would be written among its own input).
"""

from __future__ import annotations

import dataclasses
import email.parser
import hashlib
import html
import json
import re
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (InvalidSdistFilename, InvalidWheelFilename, canonicalize_name,
                             parse_sdist_filename, parse_wheel_filename)

from builder.common import signing
from builder.common.files import sha256_file, write_atomic
from builder.errors import ConfigurationError, from_os_error, shorten

# PEP 629: the version of the simple API these pages follow.
REPOSITORY_VERSION = "1.0"
# What `index` wrote into OUT (relative paths and their sha256): the only files it may replace or remove.
MANIFEST = ".moshi-build-index.json"
GENERATOR = "moshi-build index"
# METADATA larger than this is not a wheel's (and not read into memory).
MAX_METADATA = 16 << 20


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
        infos = [i for i in z.infolist() if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/METADATA")]
        if len(infos) != 1:
            raise ConfigurationError(f"{path}: not a wheel (no single *.dist-info/METADATA); remove it from the wheelhouse")
        if infos[0].file_size > MAX_METADATA:
            raise ConfigurationError(f"{path}: its METADATA claims {infos[0].file_size} bytes; not a wheel we built, "
                                     "rebuild or remove it")
        with z.open(infos[0]) as f:
            raw = f.read(MAX_METADATA + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigurationError(f"{path}: its {infos[0].filename} is not UTF-8 (byte {e.start}), as wheels "
                                 "must be; rebuild or remove it") from None
    metadata = email.parser.HeaderParser().parsestr(text)
    requires = []
    for line in metadata.get_all("Requires-Dist") or []:
        try:
            requires.append(canonicalize_name(Requirement(line).name))
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
        raise ConfigurationError(f"{shorten(path)}: {shorten(e)}; rename or remove it") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
        # RuntimeError: a member flagged as encrypted
        raise ConfigurationError(f"{path}: not a readable zip file ({shorten(e)}); rebuild or remove it") from None
    project = canonicalize_name(name)
    if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", project):   # PEP 508 names are ASCII
        raise ConfigurationError(f"{shorten(path)}: {shorten(repr(str(name)))} is not a valid project name "
                                 "(ASCII letters, digits, '.', '_', '-'); rename or remove it")
    return Distribution(path=path, project=project, version=str(version),
                        sha256=sha256_file(path), requires_python=requires_python, requires=requires)


def scan(wheelhouse: Path) -> list[Distribution]:
    """The wheels and sdists directly in `wheelhouse` (logs, rejected/ and the like are skipped)."""
    if not wheelhouse.is_dir():
        raise ConfigurationError(f"{wheelhouse} is not a directory; name the wheelhouse the wheels went to")
    candidates = sorted(p for p in wheelhouse.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    # a link is not published: its target (anything on the machine) would be hashed and linked into the site
    linked = [p for p in candidates if p.is_symlink()]
    if linked:
        raise ConfigurationError(f"{shorten(linked[0])} is a symbolic link; put the file itself in the wheelhouse "
                                 "or remove the link")
    files = [p for p in candidates if p.is_file()]
    if not files:
        raise ConfigurationError(f"{wheelhouse} holds no .whl or .tar.gz; build the wheels first")
    return [read_distribution(p) for p in files]


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{REPOSITORY_VERSION}">',
        f'<meta name="generator" content="{GENERATOR}">',
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


def check_places(wheelhouse: Path, out: Path, dists: list[Distribution] = ()) -> None:
    """Refuse an output folder that holds the wheelhouse or one of its files (a link leading
    into OUT counts): the index would be written among its input."""
    o = out.resolve()
    inputs = [(wheelhouse, wheelhouse.resolve())] + [(d.path, d.path.resolve()) for d in dists]
    for given, real in inputs:
        if real == o or o in real.parents:
            what = "the wheelhouse" if given == wheelhouse else f"the wheel {given.name} (it leads to {real})"
            raise ConfigurationError(
                f"--out {out} holds {what}: the index would be written among the files it lists and could "
                "replace them; choose an output folder outside the wheelhouse (e.g. --out site)"
            )


def _looks_like_ours(path: Path) -> bool:
    """A page of an older `moshi-build index` (before the manifest): it may be replaced."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    titles = ("<title>Simple index</title>", "<title>Links for ", "<title>moshi-build wheels</title>")
    return (head.startswith("<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\"")
            and any(t in head for t in titles))


_OUR_NAMES = re.compile(r"(index\.html|simple/index\.html|simple/[a-z0-9._-]+/(index\.html|[^/]+\.(whl|tar\.gz)))")


def _could_be_ours(rel: str, path: Path) -> bool:
    """The manifest is a file anyone can edit: a file is removed only if it is of a kind `index`
    writes (a page it generated, or a wheel or sdist where it puts them), whatever the manifest says."""
    if not _OUR_NAMES.fullmatch(rel):
        return False
    return not rel.endswith(".html") or _looks_like_ours(path)


def _manifest_text(files: dict[str, str]) -> str:
    return json.dumps(dict(sorted(files.items())), separators=(",", ":"))


def _read_manifest(out: Path, echo: Callable[[str], None] = print) -> dict[str, str]:
    """What an earlier run wrote, when this user's key signed the list (signing.py): an edited,
    copied or older list is not proof, and then nothing of it is removed (said once)."""
    try:
        data = json.loads((out / MANIFEST).read_bytes().decode("utf-8"))
        files = data["files"]
        if isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            if signing.signed_here(data.get("signature"), str(out.resolve()), _manifest_text(files)):
                return files
            echo(f"warning: {out / MANIFEST} is not signed by this user's key ({signing.signing_key_path()}): "
                 "no file it lists is removed; files this run does not write stay in place")
            return {}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError):
        pass
    raise ConfigurationError(f"{out / MANIFEST} is damaged, so which files `index` wrote before is unknown; "
                             "restore it, or delete it (the next run then replaces only its own pages and "
                             "keeps every other file)")


def _write_manifest(out: Path, files: dict[str, str]) -> None:
    write_atomic(out / MANIFEST, json.dumps({"index_manifest_version": 1, "generator": GENERATOR,
                                             "files": dict(sorted(files.items())),
                                             "signature": signing.sign(str(out.resolve()), _manifest_text(files))},
                                            indent=1) + "\n",
                 doing="writing the index's list of its files")


def _inside(out: Path, rel: str) -> Path | None:
    """OUT/rel if it is a plain path below OUT (a manifest entry never leads out of it)."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return out.joinpath(*parts)


def _linked_folder(out: Path, rel: str) -> Path | None:
    """The first folder between OUT and OUT/rel that is a symbolic link (None: none is). Writing
    through it would put the index (or delete files) outside OUT."""
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        folder = out.joinpath(*parts[:i])
        if os.path.islink(folder):
            return folder
    return None


def _place(src: Path, dest: Path) -> None:
    """Put `src` at `dest` atomically: a hard link if the file system allows, else a copy."""
    if dest.exists() and not dest.is_symlink() and os.path.samefile(src, dest):
        return  # already this very file (linked by the last run)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)       # same file system: no copy of hundreds of MB
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_index(dists: list[Distribution], out: Path, base_url: str | None = None) -> Path:
    """Write the site into `out`, replacing only what an earlier run wrote; returns OUT/simple."""
    by_project: dict[str, list[Distribution]] = {}
    for d in dists:
        by_project.setdefault(d.project, []).append(d)
    projects = sorted(by_project)

    pages: dict[str, bytes] = {"simple/index.html": root_page(projects).encode()}
    files: dict[str, Distribution] = {}
    for project in projects:
        pages[f"simple/{project}/index.html"] = project_page(project, by_project[project], base_url).encode()
        if base_url is None:
            for d in by_project[project]:
                files[f"simple/{project}/{d.filename}"] = d
    pages["index.html"] = landing_page(projects, example_project(dists)).encode()
    planned = {**{rel: _sha256_bytes(b) for rel, b in pages.items()},
               **{rel: d.sha256 for rel, d in files.items()}}

    try:
        out.mkdir(parents=True, exist_ok=True)
        ours = _read_manifest(out)
        # Check every place before writing anything: nothing of someone else's is replaced, and
        # nothing is written through a link to somewhere outside OUT.
        for rel in planned:
            linked = _linked_folder(out, rel)
            if linked is not None:
                raise ConfigurationError(
                    f"{linked} is a symbolic link (to {shorten(os.readlink(linked))}): `moshi-build index` writes "
                    f"only inside {out}, never through a link; remove the link, or choose another --out"
                )
        for rel, sha in planned.items():
            dest = out / rel
            if rel in ours or not os.path.lexists(dest):
                continue
            same = dest.is_file() and not dest.is_symlink() and (
                _looks_like_ours(dest) if rel in pages else sha256_file(dest) == sha)
            if not same:
                raise ConfigurationError(
                    f"{dest} is in the way: `moshi-build index` did not write it ({out / MANIFEST} does not list "
                    "it) and will not replace it; move it away, or choose another --out"
                )
        # Listed before written: an interrupted run leaves no file of ours unlisted.
        _write_manifest(out, {**ours, **planned})
        for rel, d in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                _place(d.path, out / rel)
            except OSError as e:  # named by the file meant, not its temporary name
                raise OSError(e.errno, e.strerror, str(out / rel)) from None
        # Pages after the files they link to, the root page last but one, the landing page last.
        for rel in sorted(pages, key=lambda r: (r == "index.html", r == "simple/index.html", r)):
            write_atomic(out / rel, pages[rel], doing="writing the index")
        # Files of the last index that this one no longer lists, if they still hold what was written
        # (one changed since is no longer ours: it stays, unlisted).
        for rel, sha in ours.items():
            if rel in planned:
                continue
            dest = _inside(out, rel)
            if dest is None or not os.path.lexists(dest) or _linked_folder(out, rel) is not None:
                continue
            if dest.is_file() and not dest.is_symlink() and _could_be_ours(rel, dest) and sha256_file(dest) == sha:
                dest.unlink()
                for parent in dest.parents:
                    if parent == out:
                        break
                    try:
                        parent.rmdir()  # only if empty: whatever else is there stays
                    except OSError:
                        break
        _write_manifest(out, planned)
    except OSError as e:
        error = from_os_error(e, "writing the index")
        if error is None:
            raise
        raise error from None
    return out / "simple"


def build_index(wheelhouse: Path, out: Path, base_url: str | None = None) -> tuple[Path, list[Distribution]]:
    check_places(wheelhouse, out)
    dists = scan(wheelhouse)
    check_places(wheelhouse, out, dists)
    return write_index(dists, out, base_url), dists
