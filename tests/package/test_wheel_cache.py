"""package/wheel_cache.py: the key of a wheel's inputs, and keeping/reusing verified wheels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.common import signing
from builder.common.cache import Cache
from builder.package import wheel_cache
from builder.package.project import Component


def inputs(tmp_path: Path, **changes) -> dict:
    license = tmp_path / "LICENSE"
    if not license.exists():
        license.write_text("MIT License\n")
    base = dict(kind="target", target="gfx1100",
                prefixes={"ggml-hip": tmp_path / "cache-a" / "builds" / "ggml-hip-gfx1100-735fb28de1816659"},
                tools=[], components=[Component("ggml", "0.25.3", "MIT", (license,))],
                version="0.0.0+f1fabbd", build_number=0, build_info={"rocm_stack": "7.2", "environment": "debian-x"},
                upstream={"name": "moshi.cpp", "commit": "f1fabbd14a506076d4d0a9755811598220ee9e13",
                          "date": "2026-02-18"},
                provides=["libamdhip64.so.7"], tool="tool-digest")
    base.update(changes)
    return base


def test_the_same_inputs_give_the_same_key(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    key, recorded = wheel_cache.wheel_key(**inputs(tmp_path))
    assert key == wheel_cache.wheel_key(**inputs(tmp_path))[0]
    assert len(key) == 64 and recorded["prefixes"] == {"ggml-hip": "ggml-hip-gfx1100-735fb28de1816659"}
    # a cache at another path holding the same steps: the same key
    moved = {"ggml-hip": Path("/elsewhere/builds/ggml-hip-gfx1100-735fb28de1816659")}
    assert wheel_cache.wheel_key(**inputs(tmp_path, prefixes=moved))[0] == key


@pytest.mark.parametrize("change", [
    {"target": "gfx1201"},
    {"kind": "single"},
    {"prefixes": {"ggml-hip": Path("/c/builds/ggml-hip-gfx1100-0000000000000000")}},
    {"version": "0.0.0+abcdef0"},
    {"build_number": 1},
    {"build_info": {"rocm_stack": "6.4", "environment": "debian-x"}},
    {"upstream": {"name": "moshi.cpp", "commit": "0" * 40, "date": "2026-02-18"}},
    {"provides": ["libamdhip64.so.6"]},
    {"tool": "another-moshi-build"},
])
def test_any_input_changes_the_key(tmp_path, change):
    assert wheel_cache.wheel_key(**inputs(tmp_path, **change))[0] != wheel_cache.wheel_key(**inputs(tmp_path))[0]


def test_license_text_and_source_date_epoch_are_inputs(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    key = wheel_cache.wheel_key(**inputs(tmp_path))[0]
    (tmp_path / "LICENSE").write_text("MIT License, amended\n")
    assert wheel_cache.wheel_key(**inputs(tmp_path))[0] != key
    second = wheel_cache.wheel_key(**inputs(tmp_path))[0]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert wheel_cache.wheel_key(**inputs(tmp_path))[0] != second


def test_tool_digest_follows_the_code_and_the_template(tmp_path):
    builder_dir, template = tmp_path / "builder", tmp_path / "wheels"
    (builder_dir / "__pycache__").mkdir(parents=True)
    template.mkdir()
    (builder_dir / "staging.py").write_text("X = 1\n")
    (template / "CMakeLists.txt").write_text("project(x)\n")
    first = wheel_cache.tool_digest.__wrapped__(builder_dir, template)
    (builder_dir / "__pycache__" / "staging.cpython-311.pyc").write_bytes(b"\0")   # compiled files do not count
    assert wheel_cache.tool_digest.__wrapped__(builder_dir, template) == first
    (template / "CMakeLists.txt").write_text("project(y)\n")
    assert wheel_cache.tool_digest.__wrapped__(builder_dir, template) != first
    assert len(wheel_cache.tool_digest()) == 64


def fake_wheel(path: Path, data: bytes = b"PK\x05\x06" + bytes(18)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_store_then_reuse(tmp_path):
    store = wheel_cache.WheelCache(Cache(tmp_path / "cache"))
    built = fake_wheel(tmp_path / "out1" / "moshi_rocm_gfx1100-1.0-py3-none-manylinux_2_38_x86_64.whl")
    assert store.lookup("target-gfx1100", "ab" * 32) is None
    assert store.reuse("target-gfx1100", "ab" * 32, tmp_path / "out2") is None
    kept = store.store("target-gfx1100", "ab" * 32, {"kind": "target"}, built)
    assert kept.parent.name == "target-gfx1100-abababababababab" and built.is_file()
    record = json.loads((kept.parent / "entry.json").read_text())
    assert record["key"] == "ab" * 32 and record["inputs"] == {"kind": "target"}
    lines: list[str] = []
    copied = store.reuse("target-gfx1100", "ab" * 32, tmp_path / "out2", echo=lines.append)
    assert copied == tmp_path / "out2" / built.name and copied.read_bytes() == built.read_bytes()
    assert "cached (key abababababababab" in lines[0]
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == [built.name]   # no copy left behind
    # another key with the same short prefix is not this entry
    assert store.lookup("target-gfx1100", "ab" * 16 + "cd" * 16) is None


def test_a_damaged_cached_wheel_is_not_used_and_its_entry_is_replaced(tmp_path):
    store = wheel_cache.WheelCache(Cache(tmp_path / "cache"))
    built = fake_wheel(tmp_path / "out" / "x-1.0-py3-none-any.whl")
    kept = store.store("base", "cd" * 32, {}, built)
    kept.write_bytes(b"damaged")
    lines: list[str] = []
    assert store.lookup("base", "cd" * 32, echo=lines.append) is None
    assert "not using it" in lines[0] and str(kept) in lines[0]
    again = store.store("base", "cd" * 32, {}, built)         # the next build heals the entry
    assert again == kept and store.lookup("base", "cd" * 32) == kept and kept.read_bytes() == built.read_bytes()


def test_an_entry_without_its_record_is_not_used(tmp_path):
    store = wheel_cache.WheelCache(Cache(tmp_path / "cache"))
    built = fake_wheel(tmp_path / "out" / "x-1.0-py3-none-any.whl")
    kept = store.store("base", "ef" * 32, {}, built)
    (kept.parent / "entry.json").unlink()
    assert store.lookup("base", "ef" * 32) is None
    (kept.parent / "entry.json").write_text("[]")            # JSON, but not a record
    assert store.lookup("base", "ef" * 32) is None
    assert store.store("base", "ef" * 32, {}, built) == kept  # replaced
    assert store.lookup("base", "ef" * 32) == kept


def test_toolchain_versions_are_in_the_key(tmp_path, monkeypatch):
    versions = wheel_cache.toolchain_versions()
    assert {"auditwheel", "scikit-build-core", "pip", "strip", "patchelf", "zlib"} <= set(versions)
    key = wheel_cache.wheel_key(**inputs(tmp_path))[0]
    monkeypatch.setattr(wheel_cache, "toolchain_versions", lambda: {**versions, "auditwheel": "99"})
    assert wheel_cache.wheel_key(**inputs(tmp_path))[0] != key


@pytest.mark.parametrize("name", ["../../../etc/passwd.whl", "/etc/x.whl", "..whl", "sub/x.whl", 5])
def test_an_entry_naming_a_file_outside_its_folder_is_not_used(tmp_path, name):
    """Issue 24, item 7: the entry's record is not trusted to name a path."""
    from builder.common.cache import Cache
    from builder.package.wheel_cache import ENTRY, WheelCache

    store = WheelCache(Cache(tmp_path / "cache"))
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK wheel")
    store.store("base", "k" * 64, {}, wheel)
    entry = store.entry("base", "k" * 64)
    record = json.loads((entry / ENTRY).read_text())
    (entry / ENTRY).write_text(json.dumps({**record, "wheel": name}))
    said = []
    assert store.lookup("base", "k" * 64, said.append) is None


def test_a_wheel_replaced_together_with_its_recorded_sha256_is_not_used(tmp_path):
    """Issue 24, item 7: the record is signed with a key outside the cache, so rewriting the
    record to match a replaced wheel does not make it reusable."""
    import hashlib

    store = wheel_cache.WheelCache(Cache(tmp_path / "cache"))
    built = fake_wheel(tmp_path / "out" / "x-1.0-py3-none-any.whl")
    kept = store.store("base", "aa" * 32, {}, built)
    key_file = signing.signing_key_path()
    assert key_file.stat().st_mode & 0o777 == 0o600 and not str(key_file).startswith(str(tmp_path / "cache"))
    kept.write_bytes(b"PK evil wheel")
    record = json.loads((kept.parent / "entry.json").read_text())
    record["sha256"] = hashlib.sha256(b"PK evil wheel").hexdigest()
    (kept.parent / "entry.json").write_text(json.dumps(record))
    said: list[str] = []
    assert store.lookup("base", "aa" * 32, said.append) is None
    assert "is not signed by this user's key" in said[0] and str(key_file) in said[0]
    assert store.store("base", "aa" * 32, {}, built) == kept and store.lookup("base", "aa" * 32) == kept


def test_a_cache_from_elsewhere_is_not_trusted(tmp_path, monkeypatch):
    store = wheel_cache.WheelCache(Cache(tmp_path / "cache"))
    built = fake_wheel(tmp_path / "out" / "x-1.0-py3-none-any.whl")
    store.store("base", "bb" * 32, {}, built)
    assert store.lookup("base", "bb" * 32) is not None
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-user"))   # no key there: not reused
    said: list[str] = []
    assert store.lookup("base", "bb" * 32, said.append) is None and "not signed" in said[0]


def test_store_over_an_entry_that_is_a_link_removes_the_link_only(tmp_path):
    # probe F07d: the entry is a symlink to a folder outside; rmtree raised OSError
    store = wheel_cache.WheelCache(Cache(tmp_path / "cache"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine\n")
    entry = store.entry("base", "ee" * 32)
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.symlink_to(outside, target_is_directory=True)
    built = fake_wheel(tmp_path / "out" / "x-1.0-py3-none-any.whl")
    kept = store.store("base", "ee" * 32, {}, built)
    assert not entry.is_symlink() and kept.is_file()
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("kind", ["short", "link"])
def test_a_signing_key_that_is_not_a_regular_32_byte_file_is_replaced(tmp_path, monkeypatch, kind):
    # probe F07e: the key file is a link to a 10-byte file outside; _signing_key asserted
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key_path = signing.signing_key_path()
    key_path.parent.mkdir(parents=True)
    outside = tmp_path / "outside.key"
    outside.write_bytes(b"0123456789")
    if kind == "link":
        key_path.symlink_to(outside)
    else:
        key_path.write_bytes(b"0123456789")
    store = wheel_cache.WheelCache(Cache(tmp_path / "cache"))
    assert signing._signing_key(create=False) is None       # not trusted, not followed
    built = fake_wheel(tmp_path / "out" / "x-1.0-py3-none-any.whl")
    kept = store.store("base", "aa" * 32, {}, built)
    assert store.lookup("base", "aa" * 32) == kept
    assert not key_path.is_symlink() and len(key_path.read_bytes()) == 32
    assert outside.read_bytes() == b"0123456789"


def test_a_signing_key_that_cannot_be_replaced_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key_path = signing.signing_key_path()
    (key_path / "sub").mkdir(parents=True)      # a folder where the key should be
    from builder.errors import FileAccessError

    with pytest.raises(FileAccessError, match="not a regular 32-byte file"):
        signing._signing_key(create=True)
