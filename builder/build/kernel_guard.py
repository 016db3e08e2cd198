"""The guard against upstream drift: a step that leaves kernels out (recipe `leaves_out`)
stops the build when a caller's source uses what those kernels implement.

A `--source` tree is hostile input: the walk follows no link, reads only C/C++ files,
at most SOURCE_FILE_CAP bytes of each, and quotes what it prints. Comments are not
told apart from code: a mention anywhere counts, which errs on the side of the kernels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from builder.errors import RecipeError, shorten
from builder.sources.recipe import BuildStep, Recipe

SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".hxx", ".cu", ".cuh", ".inc")
SOURCE_FILE_CAP = 8 << 20   # bytes read of one file: generated tables can be large, code is not
MAX_FILES = 50_000


def callers(recipes: dict[str, Recipe], component: str) -> list[str]:
    """Components with a build step that depends, directly or not, on a step of `component`."""
    step_owner = {s.step: r.name for r in recipes.values() for s in r.build}
    deps = {r.name: {step_owner.get(d, d) for s in r.build for d in s.depends} for r in recipes.values()}
    found: set[str] = set()
    frontier = {component}
    while frontier:
        frontier = {name for name, used in deps.items() if used & frontier and name not in found} - {component}
        found |= frontier
    return sorted(found)


def _source_files(root: Path):
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not name.endswith(SOURCE_SUFFIXES) or path.is_symlink() or not path.is_file():
                continue
            count += 1
            if count > MAX_FILES:
                return
            yield path


def find_use(root: Path, symbols: tuple[str, ...]) -> tuple[str, str, int] | None:
    """The first (symbol, file relative to root, line) where a C/C++ file under root names one
    of `symbols` as a whole word; None when none does."""
    pattern = re.compile(rb"\b(" + b"|".join(re.escape(s.encode()) for s in symbols) + rb")\b")
    for path in _source_files(root):
        try:
            with open(path, "rb") as f:
                data = f.read(SOURCE_FILE_CAP)
        except OSError:
            continue
        m = pattern.search(data)
        if m:
            return m.group(1).decode(), path.relative_to(root).as_posix(), data.count(b"\n", 0, m.start()) + 1
    return None


def check_left_out(recipes: dict[str, Recipe], trees: dict) -> None:
    """Stop with one line when a caller's source uses what a step's `leaves_out` removed."""
    for recipe in recipes.values():
        for step in recipe.build:
            for left in step.leaves_out:
                for caller in callers(recipes, recipe.name):
                    if caller in trees:
                        _check_one(step, left, recipe, caller, Path(trees[caller].path))


def _check_one(step: BuildStep, left, recipe: Recipe, caller: str, root: Path) -> None:
    use = find_use(root, left.symbols)
    if use is None:
        return
    symbol, file, line = use
    raise RecipeError(
        f"{caller} calls {symbol} ({shorten(repr(file))}, line {line}), whose kernels the "
        f"{step.step} step leaves out with {left.option}: remove that option (and its "
        f"leaves_out entry) from {recipe.path.name} to build them again")
