"""Build steps on the host with real CMake/Ninja and make: caching, rebuild scope, failures."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.build import steps
from builder.errors import BuildStepError, RecipeError
from tests.helpers.steps import project, recipe, run

CMAKE = shutil.which("cmake")
pytestmark = pytest.mark.skipif(not CMAKE or not shutil.which("ninja") or not shutil.which("cc"),
                                reason="needs cmake, ninja and a C compiler (installed by the set-up command)")


def built(results):
    return sorted(f"{s}[{t}]" if t else s for (s, t), r in results.items() if not r.cached)


def test_build_then_everything_cached(tmp_path):
    first = run(tmp_path, project(tmp_path), ["gfx1100"])
    assert built(first) == ["app", "greet", "greet-gpu[gfx1100]", "note"]
    prefix = first[("greet", None)].prefix
    out = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True,
                         env={**os.environ, "LD_LIBRARY_PATH": str(prefix / "lib")})
    assert out.stdout.strip() == "hello"
    assert (first[("note", None)].prefix / "share" / "message.txt").read_text().strip() == "configured"
    assert (first[("greet-gpu", "gfx1100")].prefix / "share" / "target.txt").read_text().strip() == "gfx1100"
    assert first[("greet", None)].log.is_file()

    second = run(tmp_path, project(tmp_path), ["gfx1100"])
    assert built(second) == []
    assert all(r.prefix == first[k].prefix for k, r in second.items())


def test_new_target_builds_only_its_per_target_step(tmp_path):
    run(tmp_path, project(tmp_path), ["gfx1100"])
    again = run(tmp_path, project(tmp_path), ["gfx1100", "gfx1030"])
    assert built(again) == ["greet-gpu[gfx1030]"]


def test_changed_option_rebuilds_the_step_and_its_dependents_only(tmp_path):
    run(tmp_path, project(tmp_path), ["gfx1100"])
    again = run(tmp_path, project(tmp_path, message="changed"), ["gfx1100"])
    assert built(again) == ["app", "note"]
    again = run(tmp_path, project(tmp_path, greeting="hi"), ["gfx1100"])
    assert built(again) == ["greet", "greet-gpu[gfx1100]"]


def test_failed_step_shows_log_tail_and_leaves_no_entry(tmp_path):
    recipes = {"note": recipe(tmp_path, "note", "shell", [
        {"step": "note", "system": "autotools", "options": ["--fail"]}])}
    with pytest.raises(BuildStepError) as e:
        run(tmp_path, recipes, [])
    msg = str(e.value)
    assert "note: configure failed" in msg and "configure: error: asked to fail" in msg
    log = Path(msg.rsplit("full log: ", 1)[1].strip())
    assert log.is_file() and "asked to fail" in log.read_text()
    assert [p.name for p in (tmp_path / "cache" / "builds").iterdir()] == []


def test_unknown_placeholder_is_a_recipe_error(tmp_path):
    recipes = {"note": recipe(tmp_path, "note", "shell", [
        {"step": "note", "system": "autotools", "options": ["--message={nonsense}"]}])}
    with pytest.raises(RecipeError, match=r"unknown placeholder \{nonsense\}"):
        run(tmp_path, recipes, [])


def test_collect_rule_matching_nothing_fails(tmp_path):
    recipes = {"greet": recipe(tmp_path, "greet", "hello", [
        {"step": "greet", "system": "cmake", "install": "collect",
         "collect": [{"from": "no-such-file", "into": "lib"}]}])}
    with pytest.raises(BuildStepError, match="matched nothing"):
        run(tmp_path, recipes, [])


def test_interrupted_build_leaves_no_complete_entry(tmp_path):
    """Ctrl-C in the middle of a step: the next run builds it again from scratch."""
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from tests.helpers.steps import project, run
from pathlib import Path
run(Path({str(tmp_path)!r}), project(Path({str(tmp_path)!r}), message="slow"), ["gfx1100"])
"""
    # A configure that sleeps gives the signal time to land mid-step.
    slow = tmp_path / "slowbin"
    slow.mkdir()
    (slow / "make").write_text("#!/bin/sh\nsleep 30\n")
    (slow / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{slow}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    builds = tmp_path / "cache" / "builds"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if builds.exists() and any(p.name.startswith(".note") for p in builds.iterdir()):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    assert not any(p.name.startswith("note-") for p in builds.iterdir())
    assert not any(p.name.startswith(".note") for p in builds.iterdir())


def test_no_path_of_the_cache_in_what_is_built(tmp_path):
    """__FILE__ and configure lines name the neutral root, never the cache's real path;
    pkg-config files still point at the real prefix."""
    results = run(tmp_path, project(tmp_path), [])
    cache_root = str((tmp_path / "cache").resolve()).encode()
    greet = results[("greet", None)].prefix
    lib = next((greet / "lib").glob("libgreet.so*"))
    data = lib.read_bytes()
    assert cache_root not in data
    assert f"{steps.NEUTRAL_ROOT}/sources/".encode() in data  # greet.c's __FILE__, mapped
    note = results[("note", None)].prefix
    configuration = (note / "share" / "configuration.txt").read_text()
    assert str(tmp_path) not in configuration
    assert f"--prefix={steps.NEUTRAL_ROOT}/builds/{note.name}" in configuration
    assert (note / "lib" / "pkgconfig" / "note.pc").read_text().startswith(f"prefix={note}\n")
    assert (note / "share" / "message.txt").read_text() == "configured\n"


def test_a_second_builder_waits_for_the_first_and_finds_the_step_built(tmp_path):
    """Two moshi-build runs sharing a cache never build the same step at once."""
    recipes = project(tmp_path)
    first_done = []
    results = {}

    def first():
        results["first"] = run(tmp_path, recipes, [])
        first_done.append(time.monotonic())

    t = threading.Thread(target=first)
    t.start()
    # Wait until the first run holds the lock of its first step, then start the second.
    locks = tmp_path / "cache" / "locks"
    deadline = time.monotonic() + 60
    while not list(locks.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.02)
    second = run(tmp_path, recipes, [])
    t.join()
    assert set(second) == set(results["first"])
    built_twice = [k for k, r in second.items() if not r.cached and not results["first"][k].cached]
    assert not built_twice, built_twice
    for r in second.values():
        assert (r.prefix / ".moshi-build-step.json").is_file()
