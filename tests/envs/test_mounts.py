"""Sharing host folders with a root (builder.envs.debian.mounted, builder/envs/mounts.py): order,
unmounting on errors and Ctrl-C, refusals, /proc/self/mountinfo, real mounts as root."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from builder.envs import debian, mounts
from builder.errors import ToolchainError
from tests.helpers.envs import REPO, needs_root
from tests.helpers.mounts import FakeMounter


@pytest.fixture
def shared(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    a = tmp_path / "cache"
    b = a / "builds"
    c = tmp_path / "src"
    for p in (a, b, c):
        p.mkdir(parents=True, exist_ok=True)
    return root, a, b, c


def test_mounted_order_and_same_paths(shared):
    root, a, b, c = shared
    m = FakeMounter()
    with debian.mounted(root, [b, c, a, a], m) as done:
        assert m.calls == [
            ("proc", root / "proc"),
            # parents before children; otherwise in the order given, duplicates dropped
            ("bind", c, root / str(c).lstrip("/")),
            ("bind", a, root / str(a).lstrip("/")),
            ("bind", b, root / str(b).lstrip("/")),
        ]
        for p in (a, b, c):
            assert (root / str(p).lstrip("/")).is_dir()
        mounted_targets = list(done)
    assert [call[1] for call in m.calls[4:]] == list(reversed(mounted_targets))
    assert all(call[0] == "umount" for call in m.calls[4:])


def test_mounted_binds_an_aliased_folder_at_its_fixed_path_too(shared):
    root, a, b, c = shared
    m = FakeMounter()
    with debian.mounted(root, [a], m, aliases={a: "/moshi-build"}):
        assert m.calls[1:] == [("bind", a, root / str(a).lstrip("/")), ("bind", a, root / "moshi-build")]
        assert (root / "moshi-build").is_dir()
    assert [call[0] for call in m.calls[3:]] == ["umount"] * 3


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_mounted_unmounts_on_exceptions(shared, exc):
    root, a, b, c = shared
    m = FakeMounter()
    with pytest.raises(exc):
        with debian.mounted(root, [a, c], m):
            raise exc()
    assert [call[0] for call in m.calls] == ["proc", "bind", "bind", "umount", "umount", "umount"]
    assert m.calls[-1] == ("umount", root / "proc")


def test_mounted_undoes_a_partial_setup(shared):
    root, a, b, c = shared
    m = FakeMounter(fail_on=c)
    with pytest.raises(ToolchainError):
        with debian.mounted(root, [a, c], m):
            pytest.fail("body must not run")
    assert m.calls == [("proc", root / "proc"), ("bind", a, root / str(a).lstrip("/")),
                       ("umount", root / str(a).lstrip("/")), ("umount", root / "proc")]


@pytest.mark.parametrize("other_thread", [False, True])
def test_ctrl_c_during_setup_is_delivered_after_it(shared, other_thread):
    # With another thread alive (tqdm's monitor, say) the kernel may hand a
    # process-directed SIGINT to that thread; it must be held back all the same.
    root, a, b, c = shared
    stop = threading.Event()
    if other_thread:
        threading.Thread(target=stop.wait, daemon=True).start()
    m = FakeMounter(on_bind=lambda src: os.kill(os.getpid(), signal.SIGINT) if src == a else None)
    body_ran = False
    with pytest.raises(KeyboardInterrupt):
        with debian.mounted(root, [a, c], m):
            body_ran = True
    stop.set()
    assert not body_ran
    # Both binds finished before the interrupt landed, and all three mounts were undone.
    assert [call[0] for call in m.calls] == ["proc", "bind", "bind", "umount", "umount", "umount"]


def test_mounted_refuses_bad_paths(shared, tmp_path):
    root, a, b, c = shared
    for bad, words in ((root / "x", "inside the environment's root"), (Path("/"), "cannot share /"),
                       (tmp_path / "missing", "does not exist")):
        if bad == root / "x":
            bad.mkdir()
        with pytest.raises(ToolchainError, match=words):
            with debian.mounted(root, [bad], FakeMounter()):
                pass


def test_mounted_refuses_symlinks_inside_root(shared):
    root, a, b, c = shared
    first = Path(str(a).lstrip("/")).parts[0]
    (root / first).symlink_to("/")  # an absolute symlink inside the root would lead out
    m = FakeMounter()
    with pytest.raises(ToolchainError, match="is a symlink inside it"):
        with debian.mounted(root, [a], m):
            pass
    assert m.calls[-1] == ("umount", root / "proc")


def test_ctrl_c_in_a_subprocess_unmounts(shared, tmp_path):
    root, a, b, c = shared
    log = tmp_path / "mounts.log"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tests.helpers.mounts import FakeMounter
        from builder.envs import debian
        m = FakeMounter(log={str(log)!r})
        try:
            with debian.mounted(Path({str(root)!r}), [Path({str(a)!r}), Path({str(c)!r})], m):
                print("ready", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    lines = [l.split()[0] for l in log.read_text().splitlines()]
    assert lines == ["proc", "bind", "bind", "umount", "umount", "umount"]
    assert log.read_text().splitlines()[-1] == f"umount {root / 'proc'}"


def test_mountinfo_parsing(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "90 27 0:21 / /x/root/proc rw - proc proc rw\n"
        "91 27 8:1 /a /x/root/my\\040dir rw - ext4 /dev/vda rw\n"
        "92 27 8:1 /a /x/rootfs rw - ext4 /dev/vda rw\n")
    assert mounts.mounts_under(Path("/x/root"), info) == [Path("/x/root/proc"), Path("/x/root/my dir")]
    assert mounts.is_mount_point(Path("/proc"), info)


@needs_root
def test_real_mounts_on_a_scratch_root(shared, tmp_path):
    root, a, b, c = shared
    (a / "file").write_text("shared")
    with debian.mounted(root, [a]) as done:
        assert mounts.mounts_under(root) == done
        assert (root / "proc" / "self").exists()
        assert (root / str(a).lstrip("/") / "file").read_text() == "shared"
    assert mounts.mounts_under(root) == []
    assert not (root / "proc" / "self").exists()


@needs_root
def test_safe_rmtree_does_not_delete_through_a_bind_mount(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    doomed = tmp_path / "doomed"
    (doomed / "inner").mkdir(parents=True)
    mounts.bind_mount(keep, doomed / "inner")
    try:
        mounts.safe_rmtree(doomed)
    finally:
        if mounts.is_mount_point(doomed / "inner"):
            mounts.unmount(doomed / "inner")
    assert not doomed.exists()
    assert (keep / "precious").read_text() == "x"

