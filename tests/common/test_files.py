"""builder/common/files.py: the one sha256 helper and the one file lock."""

import hashlib
import multiprocessing

import pytest

from builder.common.files import file_lock, sha256_file


def test_sha256_file_reads_in_blocks(tmp_path):
    data = bytes(range(256)) * 9000  # more than one block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def _hold(path, ready, release):
    with file_lock(path):
        ready.set()
        release.wait(30)


def test_a_held_lock_makes_the_next_one_wait_and_say_so(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(BlockingIOError):
            with file_lock(path):
                pass
        said = []
        with file_lock(path, acquire=False) as lock:
            assert not lock.try_acquire()
            assert lock.try_acquire(exclusive=False) is False
        release.set()
        with file_lock(path, waiting="waiting for x", echo=said.append):
            pass
    finally:
        release.set()
        holder.join(30)
    assert said in ([], ["waiting for x"])  # the holder may have let go before we asked


def test_write_atomic_replaces_the_whole_file(tmp_path):
    from builder.common.files import write_atomic

    path = tmp_path / "sub" / "state.json"
    write_atomic(path, "one\n")
    write_atomic(path, b"two\n")
    assert path.read_text() == "two\n"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_write_atomic_on_a_full_disk_or_read_only_folder_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    from builder.common import files
    from builder.errors import DiskFullError, FileAccessError

    path = tmp_path / "state.json"
    path.write_text("old\n")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_fd", full)
    with pytest.raises(DiskFullError, match=f"holding {path}"):
        files.write_atomic(path, "new\n")
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(FileAccessError, match="Read-only file system"):
        files.write_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
