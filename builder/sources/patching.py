"""Applying our patch files to an extracted source tree.

Each patch is first checked against the sha256 its recipe pins. The patches
are then applied with ``git apply -p1`` as plain-directory patching (like GNU
patch): git must not discover a repository around the tree, because inside
someone's work tree ``git apply`` silently skips every path outside the
current directory and still exits 0. Some sdists even ship a ``.git`` of their
own (llama-cpp-python's does). So ``GIT_DIR`` names something that is not a
repository (git then runs without one) and ``GIT_CEILING_DIRECTORIES`` stops
discovery at the tree as a second guard; the user's and the system's git
configuration are ignored so that settings like ``apply.whitespace=error``
cannot change the result.

All patches are checked before any is applied, and then applied in one
``git apply`` run (which writes nothing unless every hunk applies), so a patch
that no longer applies leaves the tree as it was. Patches of one series are
fed to git as one stream, so a later patch may build on an earlier one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Protocol, Sequence

from builder.errors import PatchError, ToolchainError


class PatchLike(Protocol):
    path: Path
    sha256: str


def verify_patch(patch: PatchLike) -> bytes:
    """Return the patch file's bytes after checking them against the pinned sha256."""
    path = Path(patch.path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PatchError(f"patch file {path} does not exist; restore it or remove it from the recipe") from None
    except IsADirectoryError:
        raise PatchError(f"patch file {path} is a directory; put the patch there "
                         "or remove it from the recipe") from None
    except OSError as e:
        raise PatchError(f"patch file {path}: cannot read it: {e.strerror}; check its permissions") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != patch.sha256.lower():
        raise PatchError(
            f"patch {path} has sha256 {actual} but the recipe pins {patch.sha256}; "
            "if the patch was edited on purpose, update its sha256 in the recipe"
        )
    return data


def _git_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR", "GIT_PREFIX"):
        env.pop(var, None)
    env.update(
        GIT_DIR=os.devnull,  # not a repository: git apply works on the plain directory
        GIT_CEILING_DIRECTORIES=str(tree.resolve().parent),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        LC_ALL="C",  # git's messages are parsed below
        LANGUAGE="C",
    )
    return env


def _git_apply(tree: Path, stream: bytes, check: bool) -> subprocess.CompletedProcess:
    git = shutil.which("git")
    if git is None:
        raise ToolchainError("git is needed to apply patches but is not on PATH; install git and run again")
    cmd = [git, "apply", "-p1", "--verbose", "--whitespace=nowarn"]
    if check:
        cmd.append("--check")
    cmd.append("-")
    return subprocess.run(cmd, cwd=tree, env=_git_env(tree), input=stream, capture_output=True)


def _join(chunks: Sequence[bytes]) -> bytes:
    return b"".join(c if c.endswith(b"\n") else c + b"\n" for c in chunks)


def apply_patches(tree: Path, patches: Sequence[PatchLike], where: str | None = None) -> None:
    """Verify ``patches`` and apply them in order to the directory ``tree`` (``-p1``).

    Raises :class:`PatchError` if a patch file does not match its sha256 or a
    patch no longer applies; the tree is then left unchanged. ``where`` names the
    tree in that message (a staging folder's path means nothing once it is removed).
    """
    tree = Path(tree)
    patches = list(patches)
    if not patches:
        return
    contents = [verify_patch(p) for p in patches]
    # Check the series one patch longer each time: the first failure names its patch.
    for n, patch in enumerate(patches, start=1):
        res = _git_apply(tree, _join(contents[:n]), check=True)
        if res.returncode:
            raise _no_longer_applies(where or tree, Path(patch.path), contents[n - 1], res)
    res = _git_apply(tree, _join(contents), check=False)
    if res.returncode:  # checked above; only an I/O failure gets here
        raise _no_longer_applies(where or tree, Path(patches[-1].path), contents[-1], res)


# -- explaining a failure ------------------------------------------------------


@dataclasses.dataclass
class Hunk:
    old_name: str | None
    new_name: str | None
    old_start: int
    text: str


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _strip(name: str) -> str | None:
    name = name.split("\t", 1)[0].strip()
    if name.startswith('"') and name.endswith('"'):
        name = name[1:-1]
    if name == "/dev/null":
        return None
    return name.split("/", 1)[1] if "/" in name else name


def parse_hunks(patch_text: str) -> list[Hunk]:
    """The hunks of a unified diff, with the -p1 file names they belong to."""
    hunks: list[Hunk] = []
    lines = patch_text.splitlines()
    old = new = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            old = new = None
            m = re.match(r"diff --git (\S+) (\S+)$", line)
            if m:
                old, new = _strip(m.group(1)), _strip(m.group(2))
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _strip(line[4:]), _strip(lines[i + 1][4:])
            i += 1
        elif (m := _HUNK_RE.match(line)) is not None:
            old_left = int(m.group(2)) if m.group(2) is not None else 1
            new_left = int(m.group(4)) if m.group(4) is not None else 1
            body = [line]
            i += 1
            while i < len(lines) and (old_left > 0 or new_left > 0):
                body_line = lines[i]
                tag = body_line[:1]
                if tag in (" ", ""):
                    old_left -= 1
                    new_left -= 1
                elif tag == "-":
                    old_left -= 1
                elif tag == "+":
                    new_left -= 1
                elif tag != "\\":
                    break
                body.append(body_line)
                i += 1
            if i < len(lines) and lines[i].startswith("\\"):  # "\ No newline at end of file"
                body.append(lines[i])
                i += 1
            hunks.append(Hunk(old, new, int(m.group(1)), "\n".join(body)))
            continue
        i += 1
    return hunks


_FAILED_RE = re.compile(r"^error: patch failed: (.+):(\d+)$")


def _no_longer_applies(
    tree: Path | str, patch_path: Path, patch_bytes: bytes, res: subprocess.CompletedProcess
) -> PatchError:
    out = (res.stderr or b"").decode("utf-8", "replace").splitlines()
    reasons: list[str] = []
    searched: list[str] = []
    failed: tuple[str, int] | None = None
    i = 0
    while i < len(out):
        line = out[i]
        if line == "error: while searching for:":
            i += 1
            while i < len(out) and not out[i].startswith("error: "):
                searched.append(out[i])
                i += 1
            continue
        if (m := _FAILED_RE.match(line)) is not None:
            failed = (m.group(1), int(m.group(2)))
        if line.startswith(("error: ", "fatal: ")):
            reasons.append(line.split(": ", 1)[1])
        i += 1
    if not reasons:
        reasons = [line for line in out if line and not line.startswith(("Checking patch", "Applied patch"))]
    reason = "; ".join(reasons) or f"git apply exited with status {res.returncode}"

    hunk_text = None
    if failed is not None:
        name, start = failed
        hunks = parse_hunks(patch_bytes.decode("utf-8", "replace"))
        in_file = [h for h in hunks if name in (h.old_name, h.new_name)]
        exact = [h for h in in_file if h.old_start == start]
        if exact or in_file:
            hunk = (exact or in_file)[0]
            hunk_text = f"rejected hunk in {name}:\n{hunk.text}"
    if hunk_text is None and searched:
        while searched and not searched[-1]:
            searched.pop()
        hunk_text = "git could not find these lines:\n" + "\n".join(searched)

    message = f"patch {patch_path.name} no longer applies to {tree}: {reason}"
    if hunk_text:
        message += "\n" + hunk_text
    message += "\nrefresh the patch against the new source"
    return PatchError(message)
