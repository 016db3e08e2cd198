import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from builder.errors import PatchError
from builder.sources.patching import apply_patches, parse_hunks


@dataclasses.dataclass
class P:
    path: Path
    sha256: str


ORIGINAL = "".join(f"line {i}\n" for i in range(1, 21))

GOOD = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: moshi-build <moshi-build@localhost>
Subject: [PATCH] Add a line and a file

---
diff --git a/src/data.txt b/src/data.txt
--- a/src/data.txt
+++ b/src/data.txt
@@ -3,3 +3,4 @@
 line 3
 line 4
+inserted after 4
 line 5
diff --git a/new.txt b/new.txt
new file mode 100644
--- /dev/null
+++ b/new.txt
@@ -0,0 +1 @@
+brand new
-- 
2.39.5
"""

# Builds on GOOD: only applies after it.
SECOND = """\
diff --git a/src/data.txt b/src/data.txt
--- a/src/data.txt
+++ b/src/data.txt
@@ -4,3 +4,4 @@
 line 4
 inserted after 4
+inserted by the second patch
 line 5
"""

# Its first hunk applies, its second does not match the tree any more.
STALE = """\
diff --git a/src/data.txt b/src/data.txt
--- a/src/data.txt
+++ b/src/data.txt
@@ -1,3 +1,3 @@
 line 1
-line 2
+line two
 line 3
@@ -14,3 +14,3 @@
 line 14
-line fifteen as it once was
+line 15 rewritten
 line 16
"""


def write_patch(directory: Path, name: str, text: str) -> P:
    path = directory / name
    path.write_text(text)
    return P(path, hashlib.sha256(text.encode()).hexdigest())


def snapshot(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "comp" / "src-tree"
    (root / "src").mkdir(parents=True)
    (root / "src" / "data.txt").write_text(ORIGINAL)
    return root


@pytest.fixture
def patch_dir(tmp_path):
    d = tmp_path / "patches"
    d.mkdir()
    return d


def test_good_patch_applies(tree, patch_dir):
    apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", GOOD)])
    text = (tree / "src" / "data.txt").read_text()
    assert "line 4\ninserted after 4\nline 5\n" in text
    assert (tree / "new.txt").read_text() == "brand new\n"


def test_no_patches_is_a_no_op(tree):
    before = snapshot(tree)
    apply_patches(tree, [])
    assert snapshot(tree) == before


def test_series_where_a_patch_builds_on_the_previous_one(tree, patch_dir):
    apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", GOOD),
                         write_patch(patch_dir, "0002-second.patch", SECOND)])
    assert "inserted after 4\ninserted by the second patch\nline 5\n" in (tree / "src" / "data.txt").read_text()


def test_stale_patch_names_file_and_hunk_and_leaves_tree_alone(tree, patch_dir):
    before = snapshot(tree)
    with pytest.raises(PatchError) as exc:
        apply_patches(tree, [write_patch(patch_dir, "0001-stale.patch", STALE)])
    msg = str(exc.value)
    first, *rest = msg.splitlines()
    assert first.startswith(f"patch 0001-stale.patch no longer applies to {tree}: ")
    assert "src/data.txt" in first
    body = "\n".join(rest)
    assert "@@ -14,3 +14,3 @@" in body
    assert "-line fifteen as it once was" in body
    assert "+line 15 rewritten" in body
    assert "@@ -1,3 +1,3 @@" not in body  # the hunk that still applies is not blamed
    assert rest[-1] == "refresh the patch against the new source"
    assert exc.value.return_code == 8
    assert snapshot(tree) == before  # the first hunk was not applied either


def test_stale_second_patch_leaves_tree_alone(tree, patch_dir):
    before = snapshot(tree)
    good = write_patch(patch_dir, "0001-good.patch", GOOD)
    stale = write_patch(patch_dir, "0002-stale.patch", STALE)
    with pytest.raises(PatchError) as exc:
        apply_patches(tree, [good, stale])
    assert str(exc.value).startswith("patch 0002-stale.patch no longer applies")
    assert "-line fifteen as it once was" in str(exc.value)
    assert snapshot(tree) == before
    assert not (tree / "new.txt").exists()


def test_second_patch_that_needs_a_missing_first_one(tree, patch_dir):
    with pytest.raises(PatchError) as exc:
        apply_patches(tree, [write_patch(patch_dir, "0002-second.patch", SECOND)])
    msg = str(exc.value)
    assert msg.startswith("patch 0002-second.patch no longer applies")
    assert "+inserted by the second patch" in msg


def test_new_file_that_already_exists(tree, patch_dir):
    (tree / "new.txt").write_text("already here\n")
    before = snapshot(tree)
    with pytest.raises(PatchError) as exc:
        apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", GOOD)])
    assert "already exists" in str(exc.value).splitlines()[0]
    assert snapshot(tree) == before


def test_patch_of_a_missing_file(tree, patch_dir):
    (tree / "src" / "data.txt").unlink()
    with pytest.raises(PatchError, match="0001-good.patch no longer applies"):
        apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", GOOD)])


def test_sha256_mismatch(tree, patch_dir):
    patch = write_patch(patch_dir, "0001-good.patch", GOOD)
    (patch_dir / "0001-good.patch").write_text(GOOD.replace("brand new", "edited"))
    actual = hashlib.sha256((patch_dir / "0001-good.patch").read_bytes()).hexdigest()
    before = snapshot(tree)
    with pytest.raises(PatchError) as exc:
        apply_patches(tree, [patch])
    msg = str(exc.value)
    assert "0001-good.patch" in msg and patch.sha256 in msg and actual in msg
    assert "update" in msg and "sha256" in msg and "recipe" in msg
    assert snapshot(tree) == before


def test_sha256_mismatch_of_a_later_patch_applies_nothing(tree, patch_dir):
    good = write_patch(patch_dir, "0001-good.patch", GOOD)
    second = P(write_patch(patch_dir, "0002-second.patch", SECOND).path, "0" * 64)
    before = snapshot(tree)
    with pytest.raises(PatchError, match="0002-second.patch"):
        apply_patches(tree, [good, second])
    assert snapshot(tree) == before


def test_missing_patch_file(tree, patch_dir):
    with pytest.raises(PatchError, match="does not exist"):
        apply_patches(tree, [P(patch_dir / "nope.patch", "0" * 64)])


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_tree_nested_in_a_git_work_tree(tmp_path, patch_dir):
    # Inside a work tree, a plain `git apply` would skip every path and still exit 0.
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    tree = repo / ".cache" / "sources" / "comp-123" / "src"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "data.txt").write_text(ORIGINAL)
    apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", GOOD)])
    assert "inserted after 4" in (tree / "src" / "data.txt").read_text()
    assert (tree / "new.txt").read_text() == "brand new\n"
    assert not (repo / "src").exists() and not (repo / "new.txt").exists()


def test_stale_patch_nested_in_a_git_work_tree_still_fails(tmp_path, patch_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    tree = repo / "build" / "tree"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "data.txt").write_text(ORIGINAL)
    with pytest.raises(PatchError, match="no longer applies"):
        apply_patches(tree, [write_patch(patch_dir, "0001-stale.patch", STALE)])


def test_tree_inside_an_archive_that_ships_its_own_git_dir(tmp_path, patch_dir):
    # llama-cpp-python's sdist carries a .git at its top and a .git file in vendor/llama.cpp.
    top = tmp_path / "pkg-1.0"
    (top / ".git").mkdir(parents=True)
    (top / ".git" / "HEAD").write_text("0123456789012345678901234567890123456789\n")
    vendor = top / "vendor" / "lib"
    vendor.mkdir(parents=True)
    (vendor / ".git").write_text("gitdir: ../../.git/modules/vendor/lib\n")
    tree = vendor / "core"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "data.txt").write_text(ORIGINAL)
    apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", GOOD)])
    assert (tree / "new.txt").is_file()


def test_tree_that_is_itself_a_broken_git_checkout(tree, patch_dir):
    (tree / ".git").write_text("gitdir: /nonexistent/modules/x\n")
    apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", GOOD)])
    assert (tree / "new.txt").is_file()


def test_user_git_config_does_not_change_the_result(tree, patch_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[apply]\n\twhitespace = error\n")
    monkeypatch.setenv("HOME", str(home))
    text = GOOD.replace("+brand new\n", "+brand new   \n")  # trailing whitespace
    apply_patches(tree, [write_patch(patch_dir, "0001-good.patch", text)])
    assert (tree / "new.txt").read_text() == "brand new   \n"


def test_parse_hunks():
    hunks = parse_hunks(GOOD + STALE)
    assert [(h.old_name, h.new_name, h.old_start) for h in hunks] == [
        ("src/data.txt", "src/data.txt", 3),
        (None, "new.txt", 0),
        ("src/data.txt", "src/data.txt", 1),
        ("src/data.txt", "src/data.txt", 14),
    ]
    assert hunks[1].text == "@@ -0,0 +1 @@\n+brand new"
    assert hunks[3].text.splitlines()[-1] == " line 16"
