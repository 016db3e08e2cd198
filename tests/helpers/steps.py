"""Small recipes over tests/fixtures/steps, built on the host (builder.build.steps)."""

from __future__ import annotations

from pathlib import Path

from builder.build import steps
from builder.common.cache import Cache
from builder.envs import HostSession
from builder.sources import fetch as sources
from builder.sources.recipe import all_steps, parse_recipe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "steps"


def recipe(tmp_path, name, fixture, build):
    """A recipe whose source is the local folder tests/fixtures/steps/<fixture>."""
    data = {
        "schema_version": 1, "name": name, "version": "1", "license": "MIT", "license_files": [],
        "source": {"kind": "local", "path": str(FIXTURES / fixture)}, "build": build,
    }
    return parse_recipe(data, tmp_path / f"{name}.toml", tmp_path)


def project(tmp_path, greeting="hello", message="configured"):
    """Three recipes: greet (CMake, plus a per-target step), note (autotools) and app (depends on note)."""
    return {
        "greet": recipe(tmp_path, "greet", "hello", [
            {"step": "greet", "system": "cmake", "options": [f"-DGREETING={greeting}"]},
            {"step": "greet-gpu", "system": "cmake", "per_target": True, "depends": ["greet"],
             "options": ["-DTARGET_NAME={gpu_target}"], "install": "collect",
             "collect": [{"from": "target.txt", "into": "share"}]},
        ]),
        "note": recipe(tmp_path, "note", "shell", [
            {"step": "note", "system": "autotools", "options": [f"--message={message}"]},
        ]),
        "app": recipe(tmp_path, "app", "hello", [
            {"step": "app", "system": "cmake", "depends": ["note"],
             "options": ["-DGREETING={dep:note}"]},
        ]),
    }


def run(tmp_path, recipes, targets, **kw):
    """Build every step of `recipes` for `targets` with the cache in tmp_path/cache: {(step, target): result}."""
    cache = Cache(tmp_path / "cache")
    opts = sources.FetchOptions(cache=cache, progress=False)
    trees = {r.name: sources.fetch_source(r, opts) for r in recipes.values()}
    session = HostSession(None)  # the real host session: only its command wrapping is used
    ctx = steps.BuildContext(cache=cache, session=session, environment_id="host-test",
                             base_env=session.base_env(), jobs=2, progress=False, echo=lambda s: None, **kw)
    return {(r.step, r.target): r for r in steps.build_all(all_steps(recipes), trees, targets, ctx)}
