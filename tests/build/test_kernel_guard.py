"""The drift guard: a caller's source that uses left-out kernels stops the build, in one line."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.build import kernel_guard
from builder.errors import RecipeError
from builder.sources.recipe import load_recipes
from tests.sources.test_recipe import write

LIB = '''options = ["-DFAST=OFF"]
leaves_out = [{ option = "-DFAST=OFF", symbols = ["lib_fast_op"], reason = "the app never calls it" }]'''


def two_recipes(tmp_path: Path) -> dict:
    write(tmp_path, "lib", extra=LIB)
    write(tmp_path, "app", extra='depends = ["lib"]')
    write(tmp_path, "other")
    return load_recipes(tmp_path, tmp_path)


def tree(tmp_path: Path, files: dict[str, str]) -> SimpleNamespace:
    root = tmp_path / "src-app"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return SimpleNamespace(path=root)


def test_the_project_recipes_leave_out_flash_attention_and_moshi_cpp_is_the_caller():
    recipes = load_recipes()
    hip = next(s for s in recipes["ggml"].build if s.step == "ggml-hip")
    assert [(x.option, x.symbols) for x in hip.leaves_out] == [("-DGGML_CUDA_FA=OFF", ("ggml_flash_attn_ext",))]
    assert kernel_guard.callers(recipes, "ggml") == ["moshi.cpp"]


def test_callers_are_found_through_the_steps_they_depend_on(tmp_path):
    write(tmp_path, "lib")
    write(tmp_path, "mid", extra='depends = ["lib"]')
    write(tmp_path, "top", extra='depends = ["mid"]')
    write(tmp_path, "alone")
    assert kernel_guard.callers(load_recipes(tmp_path, tmp_path), "lib") == ["mid", "top"]


def test_a_caller_that_uses_a_left_out_symbol_stops_the_build_naming_file_line_and_option(tmp_path):
    recipes = two_recipes(tmp_path)
    app = tree(tmp_path, {"src/a.cpp": "int x;\n", "src/deep/b.h": "// one\n\nauto t = lib_fast_op(ctx, q);\n"})
    with pytest.raises(RecipeError) as e:
        kernel_guard.check_left_out(recipes, {"app": app})
    message = str(e.value)
    assert "\n" not in message
    assert "app calls lib_fast_op ('src/deep/b.h', line 3)" in message
    assert "-DFAST=OFF" in message and "lib.toml" in message


def test_a_source_without_the_symbol_passes_and_names_that_merely_contain_it_do_not_count(tmp_path):
    recipes = two_recipes(tmp_path)
    app = tree(tmp_path, {"a.cpp": "lib_fast_op_back(x); my_lib_fast_op(y);\n", "notes.txt": "lib_fast_op\n"})
    kernel_guard.check_left_out(recipes, {"app": app})


def test_a_component_that_does_not_use_the_library_is_not_read(tmp_path):
    recipes = two_recipes(tmp_path)
    other = tree(tmp_path, {"a.c": "lib_fast_op();\n"})
    kernel_guard.check_left_out(recipes, {"other": other})


def test_a_hostile_tree_is_read_without_following_links_or_reading_past_the_cap(tmp_path, monkeypatch):
    recipes = two_recipes(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.cpp").write_text("lib_fast_op();\n")
    app = tree(tmp_path, {"a.cpp": "int y;\n"})
    os.symlink(outside, app.path / "linked-dir")
    os.symlink(outside / "x.cpp", app.path / "linked.cpp")
    kernel_guard.check_left_out(recipes, {"app": app})
    monkeypatch.setattr(kernel_guard, "SOURCE_FILE_CAP", 64)
    (app.path / "big.cpp").write_text("x" * 100 + " lib_fast_op();\n")
    kernel_guard.check_left_out(recipes, {"app": app})


def test_leaves_out_must_name_one_of_the_steps_options(tmp_path):
    write(tmp_path, "lib", extra='options = ["-DFAST=ON"]\n' + LIB.splitlines()[1])
    with pytest.raises(RecipeError, match="leaves_out names the option '-DFAST=OFF', which its options do not have"):
        load_recipes(tmp_path, tmp_path)


@pytest.mark.parametrize("symbol", ["", "a b", "x(", "1abc", "a" * 200])
def test_a_symbol_must_be_a_c_identifier(tmp_path, symbol):
    extra = f'options = ["-DFAST=OFF"]\nleaves_out = [{{ option = "-DFAST=OFF", symbols = ["{symbol}"], reason = "r" }}]'
    write(tmp_path, "lib", extra=extra)
    with pytest.raises(RecipeError):
        load_recipes(tmp_path, tmp_path)


def test_the_guard_is_not_part_of_the_step_key():
    recipes = load_recipes()
    from dataclasses import replace
    from builder.build.steps import step_key
    hip = next(s for s in recipes["ggml"].build if s.step == "ggml-hip")
    tree_ = SimpleNamespace(key="k")
    assert step_key(hip, tree_, "env", "gfx1100", []) == step_key(replace(hip, leaves_out=()), tree_, "env", "gfx1100", [])
