"""What the build-environment tests share: the repository, root-only marks, fake scripts, stack variants."""

from __future__ import annotations

import dataclasses
import os
import stat
import textwrap
from pathlib import Path

import pytest

from builder.envs import stacks

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mount, chroot)")


def script(path: Path, text: str) -> Path:
    """An executable shell script at `path` (text dedented, a #!/bin/sh line added)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(text))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def stack_with(name: str | None = None, **changes) -> stacks.RocmStack:
    """A ROCm stack of stacks.toml (the default one if name is None) with some fields changed."""
    return dataclasses.replace(stacks.get_stack(name), **changes)
