"""Property tests (issue 24): extract_archive takes hostile tar and zip archives (a --source archive, a
download). Whatever the members (files, directories, symlinks, tar hard links; relative names with "..",
absolute names, paths past PATH_MAX, chains of links), nothing outside the extraction root is created or
changed, no path under the root resolves outside it, and the outcome agrees with an independent model:
a member that escapes is refused with UnsafeArchiveError (one line), a safe archive extracts."""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from builder.errors import FILE_SYSTEM_ERRNOS, UnsafeArchiveError
from builder.sources.extract import MAX_LINK_TEXT, extract_archive

FUZZ = settings(max_examples=800, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Tokens replaced by paths under the example's sandbox (never the real /tmp or /etc).
ABS_TMP, ABS_PASSWD = "<ABS_TMP>", "<ABS_PASSWD>"

# -- strategies ------------------------------------------------------------------------

component = st.sampled_from(["a", "b", "L", "esc", "..", "."])
relative = st.lists(component, min_size=1, max_size=4).map("/".join)
tame_relative = st.lists(st.sampled_from(["a", "b", "L", "esc", "."]), min_size=1, max_size=3).map("/".join)
absolute = st.sampled_from([ABS_TMP, ABS_PASSWD, ABS_TMP + "/a"])


@st.composite
def long_path(draw, climb: bool = False):
    """Components of 100-250 characters repeated past PATH_MAX (4096), optionally climbing back out."""
    width = draw(st.integers(100, 250))
    count = 4096 // (width + 1) + draw(st.integers(1, 3))
    parts = [draw(st.sampled_from("DEF")) * width] * count
    if climb:
        parts += [".."] * (count + draw(st.integers(0, 2)))
    return "/".join(parts + [draw(st.sampled_from(["f", "L", "a"]))])


names = st.one_of(relative, relative, relative, absolute, long_path())
targets = st.one_of(relative, relative, st.sampled_from(["../..", "..", ".", "L", "a", "esc", "L/..", "a/b"]),
                    absolute, st.just("/etc/passwd"), long_path(climb=True), long_path())
# Half the archives are tame (relative names without "..", short targets), so that safe archives, whose
# files the model predicts, are common; the other half mixes in every hostile shape.
tame_names = tame_relative
tame_targets = st.one_of(tame_relative, st.sampled_from(["..", "a/..", "L", "a", "b/esc", "../a"]))


@st.composite
def members(draw, kinds):
    hostile = draw(st.booleans())
    out = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(kinds))
        name = draw(names if hostile else tame_names)
        target = draw(targets if hostile else tame_targets) if kind in ("sym", "hard") else None
        out.append((kind, name, target, b"data %d\n" % i))
    return out


# -- the independent model ---------------------------------------------------------------

ESCAPE, LOOP = "escape", "loop"


def _comps(text: str) -> list[str]:
    return text.split("/")


def _walk(start: tuple, comps: list[str], links: dict, follow_last: bool, depth: int = 0):
    """Resolve `comps` from `start` (a tuple of components under the root) as the kernel would, through the
    model's links: ".." above the root or an absolute target is an escape."""
    cur = list(start)
    for i, c in enumerate(comps):
        if c in ("", "."):
            continue
        if c == "..":
            if not cur:
                return ESCAPE
            cur.pop()
            continue
        cur.append(c)
        key = tuple(cur)
        if key in links and (i < len(comps) - 1 or follow_last):
            if depth > 40:
                return LOOP
            target = links[key]
            if target.startswith("/"):
                return ESCAPE
            got = _walk(key[:-1], _comps(target), links, True, depth + 1)
            if got in (ESCAPE, LOOP):
                return got
            cur = list(got)
    return tuple(cur)


def _lexical(start: tuple, text: str):
    """Lexical normalisation (no links): None if it climbs above the root or is absolute."""
    if text.startswith("/"):
        return None
    cur = list(start)
    for c in _comps(text):
        if c in ("", "."):
            continue
        if c == "..":
            if not cur:
                return None
            cur.pop()
        else:
            cur.append(c)
    return tuple(cur)


def _passes_through_links(rel: tuple, target: str, links: set) -> bool:
    """extract.py's documented conservative rule: a link's target, walked one component at a time from the
    link's folder, may not climb above the root nor pass through (or end on) another link of the archive."""
    parts = list(rel[:-1])
    for c in _comps(target):
        if c in ("", "."):
            continue
        if c == "..":
            if not parts:
                return True
            parts.pop()
            continue
        parts.append(c)
        if tuple(parts) in links:
            return True
    return False


def conservative_refusal(kind_of_archive: str, ms) -> str | None:
    """Why extract.py's documented up-front rules refuse the archive (before writing anything), or None."""
    sym_names: dict[tuple, str] = {}
    for kind, name, target, _data in ms:
        rel = _lexical((), name)
        if name.startswith("/") or rel is None:
            return "name absolute or above the root"
        if kind_of_archive == "zip" and rel == ():
            continue
        if kind in ("sym", "hard"):
            if target.startswith("/"):
                return "absolute link target"
            base = rel[:-1] if kind == "sym" else ()
            if _lexical(base, target) is None:
                return "link target above the root"
        if kind == "sym":
            sym_names[rel] = target
    for rel, target in sym_names.items():
        if len(target) > MAX_LINK_TEXT or len("/".join(rel)) > MAX_LINK_TEXT:
            return f"link name or target past {MAX_LINK_TEXT} characters"
        if _passes_through_links(rel, target, set(sym_names)):
            return "link through a link, or climbing out"
    if kind_of_archive == "zip":  # no member may be written under a link of the archive (made last)
        for _kind, name, _t, _d in ms:
            rel = _lexical((), name)
            if any(rel[:i] in sym_names for i in range(1, len(rel))):
                return "written through a link"
    return None


def model(kind_of_archive: str, ms):
    """Walk the members in order with the links made so far. Returns (escapes, tree, unsure):
    escapes - a member or link target leaves the root; tree - what the root should hold
    ({path: ("dir",) | ("file", bytes) | ("sym", target)}); unsure - a member the model does not predict
    the bytes of (a conflict, a path too long to write, a dangling hard link...)."""
    links: dict[tuple, str] = {}
    tree: dict[tuple, tuple] = {}
    unsure = False
    escapes = False
    later_syms = []
    for kind, name, target, data in ms:
        if name.startswith("/"):
            escapes = True
            continue
        if kind_of_archive == "zip":
            # zip names are normalised lexically and its links made after every file
            where = _lexical((), name)
            if where is None:
                escapes = True
                continue
            if where == ():
                continue
        else:
            if _comps(name)[-1] in ("", ".", ".."):
                unsure = True  # a member named "x/.": tarfile writes or links onto a folder
            if _walk((), _comps(name), links, follow_last=False) in links:
                unsure = True  # a member in place of a link made before it: written through it, or not at all
            comps = _comps(name)
            for i in range(1, len(comps)):
                via = _walk((), comps[:i], links, follow_last=False)
                if via in links and tree.get(_walk((), comps[:i], links, follow_last=True), ("",))[0] != "dir":
                    unsure = True  # through a link to no folder (dangling): tarfile's makedirs fails
            where = _walk((), comps, links, follow_last=(kind in ("file", "dir")))
        if where in (ESCAPE, LOOP):
            escapes |= where == ESCAPE
            unsure |= where == LOOP
            continue
        if len(name) > 3000 or (target and len(target) > 3000):
            unsure = True  # past PATH_MAX: ENAMETOOLONG
        if where == () and kind != "dir":
            unsure = True  # a file or link in place of the root itself
        if kind_of_archive == "tar" and ".." in _comps(name):
            unsure = True  # tarfile's os.makedirs("x/..") fails with EEXIST
        if any(tree.get(where[:i], ("dir",))[0] != "dir" for i in range(1, len(where))):
            unsure = True  # a parent is a file or a link
        if kind in ("sym", "hard"):
            if target.startswith("/"):
                escapes = True
                continue
            start = where[:-1] if kind == "sym" else ()
            resolved = _walk(start, _comps(target), links, follow_last=True)
            if resolved == ESCAPE:
                escapes = True
                continue
        for i in range(1, len(where)):
            tree.setdefault(where[:i], ("dir",))  # folders made on the way
        if where in tree and not (kind == "dir" and tree[where][0] == "dir"):
            unsure = True  # a second member at the same place
        if kind == "file":
            tree[where] = ("file", data)
        elif kind == "dir":
            tree[where] = ("dir",)
        elif kind == "sym":
            if kind_of_archive == "zip":
                later_syms.append((where, target))
            else:
                links[where] = target
                tree[where] = ("sym", target)
        else:
            src = tree.get(resolved) if resolved != LOOP else None
            if src is None or src[0] != "file":
                unsure = True
            else:
                tree[where] = src
    for where, target in later_syms:
        if where in tree or any(w[:len(where)] == where for w in tree):
            unsure = True  # zip: "a link that would replace another member" (refused), or a second link there
        if _walk(where[:-1], _comps(target), links, follow_last=True) == ESCAPE:
            escapes = True
        links[where] = target
        tree[where] = ("sym", target)
    return escapes, tree, unsure


# -- building and checking ------------------------------------------------------------------


def _fill(text: str, sandbox: Path) -> str:
    return text.replace(ABS_TMP, f"{sandbox}/tmp/x").replace(ABS_PASSWD, f"{sandbox}/sentinel/passwd")


def write_tar(path: Path, ms) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, target, data in ms:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
            info.mode = 0o755 if kind == "dir" else 0o777
            if target is not None:
                info.linkname = target
            tf.addfile(info)


def write_zip(path: Path, ms) -> None:
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are part of the game
        for kind, name, target, data in ms:
            info = zipfile.ZipInfo(name + "/" if kind == "dir" and not name.endswith("/") else name)
            info.create_system = 3
            if kind == "sym":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, target.encode())
            elif kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                zf.writestr(info, data)


def snapshot(sandbox: Path, root: Path) -> dict:
    """Every path of the sandbox except the root's contents: its type and contents (not following links)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(sandbox, followlinks=False):
        if Path(dirpath) == root:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p == root:
                continue
            st_ = os.lstat(p)
            if stat.S_ISLNK(st_.st_mode):
                seen[str(p)] = ("sym", os.readlink(p))
            elif stat.S_ISDIR(st_.st_mode):
                seen[str(p)] = ("dir",)
            else:
                seen[str(p)] = ("file", p.read_bytes(), stat.S_IMODE(st_.st_mode))
    return seen


def all_inside(root: Path) -> None:
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            real = os.path.realpath(p)
            assert real == real_root or real.startswith(real_root + os.sep), f"{p} resolves to {real}, outside"


def check(kind_of_archive: str, raw_members) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp) / "sandbox"
        root = sandbox / "root"
        root.mkdir(parents=True)
        (sandbox / "sentinel").mkdir()
        (sandbox / "sentinel" / "passwd").write_bytes(b"root:x:0:0\n")
        (sandbox / "tmp").mkdir()
        ms = [(k, _fill(n, sandbox), _fill(t, sandbox) if t is not None else None, d) for k, n, t, d in raw_members]
        archive = Path(tmp) / f"a.{kind_of_archive}"
        (write_zip if kind_of_archive == "zip" else write_tar)(archive, ms)

        before = snapshot(sandbox, root)
        escapes, tree, unsure = model(kind_of_archive, ms)
        refused = conservative_refusal(kind_of_archive, ms)
        error = None
        try:
            extract_archive(archive, root)
        except UnsafeArchiveError as e:
            error = e
            assert "\n" not in str(e) and "not trusted" in str(e)
        except OSError as e:
            # a member that cannot be written (a path past PATH_MAX, a file where a folder is...):
            # the CLI turns these into one line (FileAccessError); never an escape
            assert e.errno in FILE_SYSTEM_ERRNOS, e
            assert e.errno != errno.ENOSPC
            assert not escapes or unsure, f"escaping archive gave {e!r}, not a refusal"
            assert unsure or refused is None, e
            error = e

        # (1) nothing outside the root created or changed; (2) nothing under the root resolves outside it
        assert snapshot(sandbox, root) == before
        all_inside(root)

        # (3) agreement with the model
        if escapes:
            assert isinstance(error, (UnsafeArchiveError, OSError)), "an escaping member was not refused"
            if not unsure:
                assert isinstance(error, UnsafeArchiveError)
        elif refused is not None:
            assert isinstance(error, UnsafeArchiveError), f"expected the documented refusal: {refused}"
        elif not unsure:
            assert error is None, f"a safe archive was refused: {error}"
            for path, node in tree.items():
                p = root.joinpath(*path)
                if node[0] == "file":
                    assert p.read_bytes() == node[1], path
                elif node[0] == "dir":
                    assert p.is_dir(), path
                else:
                    assert os.readlink(p) == node[1], path


# -- the properties ------------------------------------------------------------------------------


@FUZZ
@given(ms=members(["file", "dir", "sym", "hard"]))
@example(ms=[("sym", "L", ".", None), ("file", "L/../esc", None, b"x")])
@example(ms=[("sym", "a", "..", None)])
@example(ms=[("sym", "x", ".", None), ("sym", "d/M", "../x/..", None), ("file", "d/M/sentinel/passwd", None, b"x")])
@example(ms=[("sym", "L", "a", None), ("sym", "a", "../..", None)])
@example(ms=[("sym", "a/b", ".", None), ("sym", "L", "a/b/../..", None), ("file", "L/esc", None, b"x")])
@example(ms=[("dir", "D" * 200 + "/" + "D" * 200, None, None),
             ("sym", "/".join(["E" * 247] * 16) + "/L", "/".join([".."] * 18), None),
             ("file", "/".join(["E" * 247] * 16) + "/L/sentinel/passwd", None, b"x")])
@example(ms=[("file", ABS_PASSWD, None, b"x")])
@example(ms=[("hard", "h", ABS_PASSWD, None)])
@example(ms=[("sym", "a/.", ".", None)])  # tarfile would recurse on it: refused up front
def test_tar_extraction_never_leaves_the_root(ms):
    check("tar", ms)


@FUZZ
@given(ms=members(["file", "dir", "sym"]))
@example(ms=[("sym", "L", ".", None), ("file", "L/../esc", None, b"x")])
@example(ms=[("sym", "L", "a", None), ("sym", "a", "../..", None)])
@example(ms=[("sym", "L", "..", None), ("file", "L/passwd", None, b"x")])
@example(ms=[("file", ABS_TMP, None, b"x")])
@example(ms=[("sym", "x", ".", None), ("sym", "d/M", "../x/..", None)])  # inside lexically, out through x
def test_zip_extraction_never_leaves_the_root(ms):
    check("zip", ms)


def test_tar_hard_link_to_a_missing_member_is_a_one_line_error(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    archive = tmp_path / "a.tar"
    write_tar(archive, [("hard", "a", "missing", None)])
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, root)


def test_tar_symlink_named_like_a_folder_is_a_one_line_error(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    archive = tmp_path / "a.tar"
    write_tar(archive, [("sym", "a/.", ".", None)])
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, root)
