"""The recipe model: one TOML file per upstream component, loaded into typed objects.

A recipe is data. It pins a source (archive URL, PyPI sdist or git commit, each
with its checksum or full commit id), lists our patches with their sha256, and
declares build steps as a build system plus options. The builder interprets
these generically; it has no per-component branches.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from typing import Literal, Union


from builder.common import resources
from builder.errors import RecipeError, shorten

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPES_DIR = PROJECT_ROOT / "recipes"
DEFAULT_PATCHES_DIR = PROJECT_ROOT / "patches"


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
    url: str
    sha256: str
    filename: str
    subdirectory: str | None = None
    kind: Literal["archive"] = "archive"


@dataclasses.dataclass(frozen=True)
class PypiSource:
    package: str
    version: str
    filename: str
    sha256: str
    subdirectory: str | None = None
    kind: Literal["pypi"] = "pypi"


@dataclasses.dataclass(frozen=True)
class DebianSource:
    """A file of a Debian source package (e.g. its .orig.tar of the upstream release),
    found in the archives apt is configured with (builder/sources/debian_archive.py)."""

    package: str
    version: str
    filename: str
    sha256: str
    component: str = "main"
    subdirectory: str | None = None
    kind: Literal["debian"] = "debian"


@dataclasses.dataclass(frozen=True)
class GitSource:
    url: str
    commit: str
    subdirectory: str | None = None
    kind: Literal["git"] = "git"

    @property
    def repo_name(self) -> str:
        """Last path component of the URL without .git: the name a mirror uses."""
        return self.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


@dataclasses.dataclass(frozen=True)
class LocalSource:
    """A directory of this project (test applications): pinned by its content hash."""

    path: Path
    subdirectory: None = None
    kind: Literal["local"] = "local"


Source = Union[ArchiveSource, PypiSource, DebianSource, GitSource, LocalSource]


@dataclasses.dataclass(frozen=True)
class Patch:
    path: Path
    sha256: str
    reason: str = ""

    @property
    def file(self) -> str:
        return self.path.name


@dataclasses.dataclass(frozen=True)
class CollectRule:
    from_glob: str
    into: str


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """Kernels an option of a step leaves out, and the symbols whose use needs them."""

    option: str
    symbols: tuple[str, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class BuildStep:
    step: str
    component: str
    system: Literal["cmake", "autotools"]
    per_target: bool = False
    depends: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    build_targets: tuple[str, ...] = ()
    install: Literal["rules", "collect"] = "rules"
    collect: tuple[CollectRule, ...] = ()
    leaves_out: tuple[LeftOut, ...] = ()


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    license: str
    license_files: tuple[str, ...]
    source: Source
    patches: tuple[Patch, ...]
    build: tuple[BuildStep, ...]
    path: Path
    description: str = ""
    role: Literal["library", "application"] = "library"
    date: str | None = None           # YYYY-MM-DD: the pinned source's date (an application's wheel version)
    # application: globs of its model download lists in the source tree, and each tool's
    # default model folder (builder/package/models.py); shipped in the base wheel as models.json
    model_lists: tuple[str, ...] = ()
    model_tools: tuple[tuple[str, str], ...] = ()
    model_also: tuple[tuple[str, tuple[str, ...]], ...] = ()   # tool -> other folders it loads from

    @property
    def commit(self) -> str | None:
        """The full commit id of a git source (None for other sources)."""
        return self.source.commit if isinstance(self.source, GitSource) else None


# Top-level fields recipes no longer have, and where what they said lives now.
_MOVED = {
    "runtime": "libraries opened with dlopen() are listed only in builder/resources/runtime.toml "
               "([[dlopen]]: soname, needed_by, bundle, reason); remove [runtime] from the recipe",
}


def _plain_filename(name: str, path: Path, field: str) -> str:
    """A file name that stays inside the cache folder it is stored in."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise RecipeError(f"{path}: {field} {shorten(repr(name))} is not a plain file name; "
                          "give the archive's name without folders (source.filename)")
    return name


def parse_recipe(data: dict, path: Path, patches_dir: Path) -> Recipe:
    """Validate already-parsed TOML data and build the typed recipe."""
    resources.validate(data, "recipe", str(path), RecipeError, moved=_MOVED)

    src = data["source"]
    kind = src["kind"]
    source: Source
    if kind == "archive":
        filename = src.get("filename") or src["url"].rstrip("/").rsplit("/", 1)[-1]
        field = "source.filename" if src.get("filename") else "the file name at the end of source.url,"
        source = ArchiveSource(src["url"], src["sha256"], _plain_filename(filename, path, field),
                               src.get("subdirectory"))
    elif kind == "pypi":
        source = PypiSource(
            src["package"], src["version"], _plain_filename(src["filename"], path, "source.filename"),
            src["sha256"], src.get("subdirectory")
        )
    elif kind == "debian":
        source = DebianSource(src["package"], src["version"],
                              _plain_filename(src["filename"], path, "source.filename"), src["sha256"],
                              src.get("component", "main"), src.get("subdirectory"))
    elif kind == "git":
        source = GitSource(src["url"], src["commit"], src.get("subdirectory"))
    else:
        try:
            source = LocalSource((path.parent / src["path"]).resolve())
        except (ValueError, OSError, RuntimeError) as e:  # a NUL byte, a name too long, a link loop
            raise RecipeError(f"{path}: source.path {shorten(repr(src['path']))} is not a usable "
                              f"path ({e}); name the project folder relative to the recipe") from None

    name = data["name"]
    date = _recipe_date(data, path)
    patches = tuple(
        Patch(patches_dir / name / p["file"], p["sha256"], p.get("reason", ""))
        for p in data.get("patches", [])
    )
    for patch in patches:
        if not patch.path.is_file():
            raise RecipeError(
                f"{path}: patch {patch.file} is listed but {patch.path} does not exist; "
                "add the file or remove the entry"
            )

    steps = []
    for b in data["build"]:
        if b.get("install", "rules") == "collect" and not b.get("collect"):
            raise RecipeError(f"{path}: build step {b['step']!r} has install = 'collect' but no collect rules")
        for left in b.get("leaves_out", ()):
            if left["option"] not in b.get("options", ()):
                raise RecipeError(f"{path}: build step {b['step']!r}: leaves_out names the option "
                                  f"{shorten(repr(left['option']))}, which its options do not have; "
                                  "write it exactly as in options")
        steps.append(
            BuildStep(
                step=b["step"],
                component=name,
                system=b["system"],
                per_target=b.get("per_target", False),
                depends=tuple(b.get("depends", ())),
                options=tuple(b.get("options", ())),
                env=tuple(sorted(b.get("env", {}).items())),
                build_targets=tuple(b.get("build_targets", ())),
                install=b.get("install", "rules"),
                collect=tuple(CollectRule(c["from"], c["into"]) for c in b.get("collect", ())),
                leaves_out=tuple(LeftOut(x["option"], tuple(x["symbols"]), x["reason"])
                                 for x in b.get("leaves_out", ())),
            )
        )
    _check_license_paths(data, path)
    return Recipe(
        name=name,
        version=data["version"],
        license=data["license"],
        license_files=tuple(data["license_files"]),
        source=source,
        patches=patches,
        build=tuple(steps),
        path=path,
        description=data.get("description", ""),
        role=data.get("role", "library"),
        date=date,
        model_lists=tuple((data.get("models") or {}).get("lists", ())),
        model_tools=tuple(sorted(((data.get("models") or {}).get("tools") or {}).items())),
        model_also=tuple(sorted((t, tuple(f)) for t, f in ((data.get("models") or {}).get("also") or {}).items())),
    )


def _check_license_paths(data: dict, path: Path) -> None:
    """A license file may go up out of the source's subdirectory (ggml's is llama.cpp's, one level
    up), never out of the archive: from the archive's root it must stay inside."""
    sub = str((data.get("source") or {}).get("subdirectory") or "")
    for i, f in enumerate(data.get("license_files") or []):
        inside = os.path.normpath(os.path.join(sub, f))
        if inside == ".." or inside.startswith("../") or os.path.isabs(inside):
            raise RecipeError(f"{path}: license_files[{i}]: {shorten(repr(f))} leaves the source archive; "
                              "name a file inside it")


def _recipe_date(data: dict, path: Path) -> str | None:
    """The recipe's date: a real calendar date, not in the future; required for an application,
    whose wheel version carries it (a newer pinned commit sorts higher)."""
    text = data.get("date")
    if text is None:
        if data.get("role") == "application":
            raise RecipeError(f"{path}: an application recipe needs date = \"YYYY-MM-DD\", the pinned source's "
                              "date (git show -s --format=%cs COMMIT): the wheel version is made of it")
        return None
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise RecipeError(f"{path}: date {shorten(repr(text))} is not a calendar date (YYYY-MM-DD)") from None
    if day > datetime.date.today() + datetime.timedelta(days=1):
        raise RecipeError(f"{path}: date {text} is in the future; give the pinned source's date")
    if day.year < 1970:
        raise RecipeError(f"{path}: date {text} is before 1970; give the pinned source's date")
    return day.isoformat()


def load_recipe(path: Path, patches_dir: Path = DEFAULT_PATCHES_DIR) -> Recipe:
    data = resources.read_toml(path, RecipeError)
    recipe = parse_recipe(data, path, patches_dir)
    if recipe.name != path.stem:
        raise RecipeError(
            f"{path}: name {recipe.name!r} does not match the file name; rename one of them"
        )
    return recipe


def load_recipes(
    recipes_dir: Path = DEFAULT_RECIPES_DIR,
    patches_dir: Path = DEFAULT_PATCHES_DIR,
    extra: list[Path] = (),
) -> dict[str, Recipe]:
    """Load every recipe of a directory (plus extra files), checking cross-references."""
    paths = sorted(recipes_dir.glob("*.toml")) + list(extra)
    if not paths:
        raise RecipeError(f"{recipes_dir}: no recipes (*.toml) found")
    recipes: dict[str, Recipe] = {}
    for p in paths:
        r = load_recipe(p, patches_dir)
        if r.name in recipes:
            raise RecipeError(f"{p}: component {r.name!r} is already defined by {recipes[r.name].path}")
        recipes[r.name] = r
    check_steps(recipes)
    return recipes


def all_steps(recipes: dict[str, Recipe]) -> dict[str, BuildStep]:
    return {s.step: s for r in recipes.values() for s in r.build}


def check_steps(recipes: dict[str, Recipe]) -> None:
    """Step names are unique and every dependency names an existing step (no cycles)."""
    seen: dict[str, Path] = {}
    for r in recipes.values():
        for s in r.build:
            if s.step in seen:
                raise RecipeError(f"{r.path}: build step {s.step!r} is also defined in {seen[s.step]}")
            seen[s.step] = r.path
    steps = all_steps(recipes)
    for s in steps.values():
        for d in s.depends:
            if d not in steps:
                raise RecipeError(
                    f"{recipes[s.component].path}: step {s.step!r} depends on unknown step {d!r}; "
                    f"known steps: {', '.join(sorted(steps))}"
                )
    # Topological order raises on cycles.
    topological_steps(steps)


def topological_steps(steps: dict[str, BuildStep]) -> list[BuildStep]:
    order: list[BuildStep] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise RecipeError(f"build steps depend on each other in a cycle: {' -> '.join(chain + (name,))}")
        state[name] = 1
        for d in steps[name].depends:
            visit(d, chain + (name,))
        state[name] = 2
        order.append(steps[name])

    for name in sorted(steps):
        visit(name, ())
    return order


def select_application(recipes: dict[str, Recipe], app: str | None) -> dict[str, Recipe]:
    """Every library recipe plus one application (the only one, or the one named)."""
    apps = [r.name for r in recipes.values() if r.role == "application"]
    if app is None:
        if len(apps) != 1:
            raise RecipeError(f"choose the application with --app: one of {', '.join(apps) or '(none)'}")
        app = apps[0]
    if app not in apps:
        raise RecipeError(f"--app {app}: not an application recipe; applications: {', '.join(apps) or '(none)'}")
    chosen = {n: r for n, r in recipes.items() if r.role == "library" or n == app}
    check_steps(chosen)
    return chosen
