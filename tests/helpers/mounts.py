"""A mounter that records instead of mounting (builder.envs.debian.mounted's `mounter`)."""

from __future__ import annotations

from builder.errors import ToolchainError


class FakeMounter:
    """Records ("proc", target), ("bind", source, target), ("umount", target) in `calls`
    (and one line each in the file `log`, for a test in another process); raises
    ToolchainError binding `fail_on`; calls `on_bind(source)` after each bind."""

    def __init__(self, fail_on=None, log=None, on_bind=None):
        self.calls = []
        self.fail_on = fail_on
        self.on_bind = on_bind
        self.log = log

    def _record(self, *call):
        self.calls.append(call)
        if self.log:
            with open(self.log, "a") as f:
                f.write(" ".join(map(str, call)) + "\n")

    def mount_proc(self, target):
        self._record("proc", target)

    def bind(self, source, target):
        if self.fail_on == source:
            raise ToolchainError(f"cannot bind-mount {source}")
        self._record("bind", source, target)
        if self.on_bind:
            self.on_bind(source)

    def unmount(self, target):
        self._record("umount", target)
