"""The PEP 503 index of a wheelhouse: pages checked by parsing them, then used by real pip."""

import base64
import hashlib
import html.parser
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.publish import simple_index
from builder.cli import main


def make_wheel(directory: Path, filename_name: str, metadata_name: str, version: str,
               module: str, requires_python: str | None = None, tag: str = "py3-none-any",
               requires_dist: tuple[str, ...] = ()) -> Path:
    """A small, valid, installable wheel (RECORD with hashes, as pip checks it)."""
    dist_info = f"{filename_name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {metadata_name}\nVersion: {version}\n"
    if requires_python:
        metadata += f"Requires-Python: {requires_python}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires_dist)
    purelib = "true" if tag.endswith("-any") else "false"
    files = {
        f"{module}.py": f"VERSION = {version!r}\n",
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    path = directory / f"{filename_name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


class Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []   # (attrs dict, text)
        self._open = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._open = (dict(attrs), "")

    def handle_data(self, data):
        if self._open is not None:
            self._open = (self._open[0], self._open[1] + data)

    def handle_endtag(self, tag):
        if tag == "a" and self._open is not None:
            self.links.append(self._open)
            self._open = None


def anchors(path: Path):
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    parser = Anchors()
    parser.feed(text)
    return parser.links


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheelhouse(tmp_path):
    house = tmp_path / "wheelhouse"
    house.mkdir()
    # An unnormalized project name (capitals, dot, underscore): PEP 503 makes it moshi-rocm-testa.
    make_wheel(house, "Moshi.Rocm_TestA", "Moshi.Rocm_TestA", "1.0", "moshi_rocm_testa")
    # Two versions of a second project; 1.1 wants a Python nobody has.
    make_wheel(house, "tiny_tool", "tiny-tool", "1.0", "tiny_tool", requires_python=">=3.8")
    make_wheel(house, "tiny_tool", "tiny-tool", "1.1", "tiny_tool", requires_python=">=99")
    # What else a wheelhouse holds: build logs and rejected wheels
    (house / "tiny_tool-1.0.log").write_text("log\n")
    (house / "rejected").mkdir()
    make_wheel(house / "rejected", "bad", "bad", "0.1", "bad")
    return house


def test_pages_have_normalized_names_links_and_sha256(wheelhouse, tmp_path):
    out = tmp_path / "site"
    simple, dists = simple_index.build_index(wheelhouse, out)
    assert simple == out / "simple"
    assert len(dists) == 3

    root = anchors(simple / "index.html")
    assert [(a["href"], text) for a, text in root] == [
        ("moshi-rocm-testa/", "moshi-rocm-testa"),
        ("tiny-tool/", "tiny-tool"),
    ]
    assert sorted(p.name for p in simple.iterdir()) == ["index.html", "moshi-rocm-testa", "tiny-tool"]

    page = anchors(simple / "tiny-tool" / "index.html")
    assert [text for _, text in page] == ["tiny_tool-1.0-py3-none-any.whl", "tiny_tool-1.1-py3-none-any.whl"]
    for attrs, text in page:
        href, _, fragment = attrs["href"].partition("#")
        assert href == text
        assert fragment == f"sha256={sha256(wheelhouse / text)}"
        assert sha256(simple / "tiny-tool" / href) == sha256(wheelhouse / text)  # the file is there
    # parsed back from the escaped attribute
    assert [a["data-requires-python"] for a, _ in page] == [">=3.8", ">=99"]
    assert "&gt;=99" in (simple / "tiny-tool" / "index.html").read_text()

    (only,) = anchors(simple / "moshi-rocm-testa" / "index.html")
    assert only[1] == "Moshi.Rocm_TestA-1.0-py3-none-any.whl"
    assert "data-requires-python" not in only[0]
    assert (out / "index.html").is_file() and "simple/" in (out / "index.html").read_text()


@pytest.fixture
def pair_house(tmp_path):
    """A release as moshi-build makes it (docs/WHEEL-PAIR.md): the base wheel and a target wheel
    that requires it, with different manylinux tags."""
    house = tmp_path / "pair"
    house.mkdir()
    make_wheel(house, "moshi_rocm", "moshi-rocm", "1.0", "moshi_rocm", requires_python=">=3.8",
               tag="py3-none-manylinux_2_39_x86_64")
    make_wheel(house, "moshi_rocm_gfx1100", "moshi-rocm-gfx1100", "1.0", "moshi_rocm_gfx1100",
               tag="py3-none-manylinux_2_38_x86_64", requires_dist=("moshi-rocm==1.0",))
    return house


BASE_WHEEL = "moshi_rocm-1.0-py3-none-manylinux_2_39_x86_64.whl"
TARGET_WHEEL = "moshi_rocm_gfx1100-1.0-py3-none-manylinux_2_38_x86_64.whl"


@pytest.mark.parametrize("base_url", [None, "https://example.invalid/releases/download/v1.0"])
def test_base_and_target_wheels_get_a_page_each(pair_house, tmp_path, base_url):
    simple, dists = simple_index.build_index(pair_house, tmp_path / "site", base_url=base_url)
    assert {(d.project, d.version, d.filename) for d in dists} == {
        ("moshi-rocm", "1.0", BASE_WHEEL), ("moshi-rocm-gfx1100", "1.0", TARGET_WHEEL)}
    assert [(a["href"], text) for a, text in anchors(simple / "index.html")] == [
        ("moshi-rocm/", "moshi-rocm"), ("moshi-rocm-gfx1100/", "moshi-rocm-gfx1100")]
    for project, filename in (("moshi-rocm", BASE_WHEEL), ("moshi-rocm-gfx1100", TARGET_WHEEL)):
        (link,) = anchors(simple / project / "index.html")  # its own file only, not the other's
        assert link[1] == filename
        expected = f"{base_url}/{filename}" if base_url else filename
        assert link[0]["href"] == f"{expected}#sha256={sha256(pair_house / filename)}"
        copied = sorted(p.name for p in (simple / project).iterdir())
        assert copied == (["index.html"] if base_url else sorted(["index.html", filename]))
    assert anchors(simple / "moshi-rocm" / "index.html")[0][0]["data-requires-python"] == ">=3.8"
    # the example installs the target wheel, which brings the base; not the base alone
    assert "pip install --extra-index-url THIS_SITE/simple/ moshi-rocm-gfx1100</pre>" in (
        tmp_path / "site" / "index.html").read_text()


def test_pip_gets_both_wheels_of_the_pair_from_the_index(pair_house, tmp_path):
    """`pip install moshi-rocm-gfx1100` brings the base wheel: resolved through the index's pages
    (for the platform of a glibc 2.39 machine, whatever this one's; older pips do not extend a
    given manylinux_2_39 to the older tags, so both are named)."""
    simple, _ = simple_index.build_index(pair_house, tmp_path / "site")
    r = pip("download", "--index-url", simple.as_uri(), "--dest", str(tmp_path / "dl"), "--only-binary=:all:",
            "--platform", "manylinux_2_39_x86_64", "--platform", "manylinux_2_38_x86_64",
            "--python-version", "3.11", "moshi-rocm-gfx1100", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [BASE_WHEEL, TARGET_WHEEL]


def test_base_url_links_elsewhere_and_copies_nothing(wheelhouse, tmp_path):
    simple, _ = simple_index.build_index(wheelhouse, tmp_path / "site", base_url="https://example.invalid/dl/v1/")
    (link,) = anchors(simple / "moshi-rocm-testa" / "index.html")
    wheel = wheelhouse / "Moshi.Rocm_TestA-1.0-py3-none-any.whl"
    assert link[0]["href"] == f"https://example.invalid/dl/v1/{wheel.name}#sha256={sha256(wheel)}"
    assert [p.name for p in (simple / "moshi-rocm-testa").iterdir()] == ["index.html"]


def test_rerun_replaces_the_index(wheelhouse, tmp_path):
    out = tmp_path / "site"
    simple_index.build_index(wheelhouse, out)
    (wheelhouse / "tiny_tool-1.1-py3-none-any.whl").unlink()
    simple_index.build_index(wheelhouse, out)
    page = anchors(out / "simple" / "tiny-tool" / "index.html")
    assert [text for _, text in page] == ["tiny_tool-1.0-py3-none-any.whl"]
    assert not (out / "simple" / "tiny-tool" / "tiny_tool-1.1-py3-none-any.whl").exists()
    # no temporary files left; the one dot file is the list of what index wrote
    assert [p.name for p in out.rglob(".*")] == [simple_index.MANIFEST]


def pip(*args, cwd):
    # Only the local index: no configuration files, no PIP_* settings (find-links, extra indexes).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_pip_installs_from_the_generated_index(wheelhouse, tmp_path):
    simple, _ = simple_index.build_index(wheelhouse, tmp_path / "site")
    index_url = simple.as_uri()
    target = tmp_path / "installed"
    # Asked for by an unnormalized spelling; found through the normalized page.
    r = pip("install", "--no-deps", "--index-url", index_url, "--target", str(target),
            "moshi.rocm-TESTA", "tiny_tool", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "moshi_rocm_testa.py").read_text() == "VERSION = '1.0'\n"
    # 1.1 is newer but its data-requires-python excludes this Python
    assert (target / "tiny_tool.py").read_text() == "VERSION = '1.0'\n"


def test_pip_rejects_a_file_that_does_not_match_its_sha256(wheelhouse, tmp_path):
    simple, _ = simple_index.build_index(wheelhouse, tmp_path / "site")
    served = simple / "moshi-rocm-testa" / "Moshi.Rocm_TestA-1.0-py3-none-any.whl"
    served.unlink()  # hard-linked to the wheelhouse: replace, do not edit in place
    make_wheel(served.parent, "Moshi.Rocm_TestA", "Moshi.Rocm_TestA", "1.0", "something_else")
    r = pip("download", "--no-deps", "--index-url", simple.as_uri(), "--dest", str(tmp_path / "dl"),
            "moshi-rocm-testa", cwd=tmp_path)
    assert r.returncode != 0
    assert "HASH" in (r.stdout + r.stderr).upper()
    assert not (tmp_path / "dl" / served.name).exists()


def test_cli_writes_the_index(wheelhouse, tmp_path, capsys):
    main(["index", str(wheelhouse), "--out", str(tmp_path / "site")])
    out = capsys.readouterr().out
    assert "moshi-rocm-testa 1.0: Moshi.Rocm_TestA-1.0-py3-none-any.whl" in out
    assert (tmp_path / "site" / "simple" / "tiny-tool" / "index.html").is_file()


def test_cli_empty_wheelhouse_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["index", str(tmp_path / "empty"), "--out", str(tmp_path / "site")])
    assert e.value.code == 2
    assert "no .whl" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


# -- nothing lost: index writes and removes only its own files -------------------------------------

def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def exit_code(argv) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    return e.value.code


@pytest.mark.parametrize("layout", ["inside-simple", "same", "same-base-url", "parent"])
def test_an_output_folder_holding_the_wheelhouse_is_refused_and_nothing_is_lost(tmp_path, capsys, layout):
    site = tmp_path / "site"
    house = {"inside-simple": site / "simple", "same": site, "same-base-url": site, "parent": site / "wh"}[layout]
    house.mkdir(parents=True)
    make_wheel(house, "tiny_tool", "tiny-tool", "1.0", "tiny_tool")
    (house / "build.log").write_text("log\n")
    (house / "NOTES.md").write_text("notes\n")
    (house / "rejected").mkdir()
    make_wheel(house / "rejected", "bad", "bad", "0.1", "bad")
    before = snapshot(tmp_path)
    extra = ["--base-url", "https://example.invalid/dl"] if layout == "same-base-url" else []
    assert exit_code(["index", str(house), "--out", str(site), *extra]) == 2
    err = capsys.readouterr().err
    assert "holds the wheelhouse" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_a_wheel_linked_from_inside_the_output_is_refused(tmp_path):
    site = tmp_path / "site"
    (site / "simple" / "tiny-tool").mkdir(parents=True)
    real = make_wheel(site / "simple" / "tiny-tool", "tiny_tool", "tiny-tool", "1.0", "tiny_tool")
    house = tmp_path / "wh"
    house.mkdir()
    (house / real.name).symlink_to(real)
    with pytest.raises(simple_index.ConfigurationError, match="is a symbolic link"):
        simple_index.build_index(house, site)
    assert real.is_file()


def test_a_reindex_keeps_foreign_files_and_removes_only_its_own(wheelhouse, tmp_path):
    out = tmp_path / "site"
    simple_index.build_index(wheelhouse, out)
    (out / "simple" / "tiny-tool" / "CHANGELOG.txt").write_text("1.1: faster\n")
    (out / "README.md").write_text("our site\n")
    (out / "simple" / "notes").mkdir()
    (out / "simple" / "notes" / "x.txt").write_text("x\n")
    (wheelhouse / "tiny_tool-1.1-py3-none-any.whl").unlink()
    for p in wheelhouse.glob("Moshi*"):
        p.unlink()
    simple_index.build_index(wheelhouse, out)
    assert (out / "simple" / "tiny-tool" / "CHANGELOG.txt").read_text() == "1.1: faster\n"
    assert (out / "README.md").read_text() == "our site\n"
    assert (out / "simple" / "notes" / "x.txt").exists()
    assert not (out / "simple" / "tiny-tool" / "tiny_tool-1.1-py3-none-any.whl").exists()
    assert not (out / "simple" / "moshi-rocm-testa").exists()   # its page and wheel were ours: gone
    listed = json.loads((out / simple_index.MANIFEST).read_text())["files"]
    assert set(listed) == {"index.html", "simple/index.html", "simple/tiny-tool/index.html",
                           "simple/tiny-tool/tiny_tool-1.0-py3-none-any.whl"}


def test_a_file_of_its_own_changed_since_is_not_removed(wheelhouse, tmp_path):
    out = tmp_path / "site"
    simple_index.build_index(wheelhouse, out)
    page = out / "simple" / "moshi-rocm-testa" / "index.html"
    page.write_text("edited by hand\n")
    for p in wheelhouse.glob("Moshi*"):
        p.unlink()
    simple_index.build_index(wheelhouse, out)
    assert page.read_text() == "edited by hand\n"


def test_a_foreign_file_where_a_wheel_goes_is_refused_and_kept(wheelhouse, tmp_path, capsys):
    out = tmp_path / "site"
    (out / "simple" / "tiny-tool").mkdir(parents=True)
    theirs = out / "simple" / "tiny-tool" / "tiny_tool-1.0-py3-none-any.whl"
    theirs.write_bytes(b"someone else's file")
    assert exit_code(["index", str(wheelhouse), "--out", str(out)]) == 2
    assert "is in the way" in capsys.readouterr().err
    assert theirs.read_bytes() == b"someone else's file"
    assert not (out / "simple" / "index.html").exists()   # checked before anything was written


def test_a_site_of_an_older_index_is_taken_over(wheelhouse, tmp_path):
    # Before the manifest: same pages (without the generator line), wheels hard-linked.
    out = tmp_path / "site"
    simple_index.build_index(wheelhouse, out)
    (out / simple_index.MANIFEST).unlink()
    for page in out.rglob("index.html"):
        page.write_text(page.read_text().replace(f'<meta name="generator" content="{simple_index.GENERATOR}">\n', ""))
    (wheelhouse / "tiny_tool-1.1-py3-none-any.whl").unlink()
    simple_index.build_index(wheelhouse, out)
    assert "generator" in (out / "simple" / "index.html").read_text()
    # unlisted before, so not known to be ours: the old file stays
    assert (out / "simple" / "tiny-tool" / "tiny_tool-1.1-py3-none-any.whl").exists()


def test_metadata_that_is_not_utf8_is_a_usage_error(tmp_path, capsys):
    house = tmp_path / "wh"
    house.mkdir()
    path = house / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\nSummary: caf\xe9\n".encode("latin-1"))
    assert exit_code(["index", str(house), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "METADATA is not UTF-8" in err and "Traceback" not in err


def test_an_encrypted_metadata_member_is_a_usage_error(tmp_path, capsys):
    """Issue 24, item 9: zipfile raises RuntimeError for a member flagged as encrypted."""
    from tests.common.test_wheel_reader import encrypted

    house = tmp_path / "wh"
    house.mkdir()
    path = house / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
    path.write_bytes(encrypted(path.read_bytes()))
    assert exit_code(["index", str(house), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "not a readable zip file" in err and "encrypted" in err and "Traceback" not in err


def test_a_full_disk_while_writing_the_index_is_exit_12(wheelhouse, tmp_path, capsys, monkeypatch):
    import errno

    def full(src, dest):
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    monkeypatch.setattr(simple_index, "_place", full)
    assert exit_code(["index", str(wheelhouse), "--out", str(tmp_path / "site")]) == 12
    err = capsys.readouterr().err
    assert "no space left" in err and ".tmp" not in err


@pytest.mark.parametrize("linked", ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"])
def test_a_symlink_in_the_wheelhouse_is_refused_and_nothing_is_published(tmp_path, capsys, linked):
    """Issue 24, item 4: an sdist or wheel linked to a file outside is never hashed or linked."""
    house = tmp_path / "wh"
    house.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("not for the site")
    (house / linked).symlink_to(secret)
    assert exit_code(["index", str(house), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and "Traceback" not in err
    assert not (tmp_path / "site").exists() or not any((tmp_path / "site").rglob("*secret*"))


def test_a_non_ascii_project_name_is_refused(tmp_path, capsys):
    """Issue 24, item 16."""
    house = tmp_path / "wh"
    house.mkdir()
    (house / "d\u00e9mo-1.0.tar.gz").write_bytes(b"x")
    assert exit_code(["index", str(house), "--out", str(tmp_path / "site")]) == 2
    assert "is not a valid project name" in capsys.readouterr().err


def test_an_edited_manifest_cannot_make_index_delete_a_file_it_did_not_write(wheelhouse, tmp_path):
    """Issue 24, item 6: the manifest names CHANGELOG.txt with its right hash; it stays."""
    import hashlib
    import json

    site = tmp_path / "site"
    simple_index.build_index(wheelhouse, site)
    notes = site / "CHANGELOG.txt"
    notes.write_text("the maintainers' notes\n")
    manifest = site / simple_index.MANIFEST
    data = json.loads(manifest.read_text())
    data["files"]["CHANGELOG.txt"] = hashlib.sha256(notes.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(data))
    simple_index.build_index(wheelhouse, site)
    assert notes.read_text() == "the maintainers' notes\n"


def test_a_manifest_not_signed_by_this_user_removes_nothing_even_a_file_of_a_kind_index_writes(
        wheelhouse, tmp_path, capsys, monkeypatch):
    """Probe F06c: the list names a user's own wheel where index puts wheels, with its right hash.
    The list is signed with the user's key (builder/common/signing.py); an edited one proves nothing."""
    import hashlib
    import json

    site = tmp_path / "site"
    simple_index.build_index(wheelhouse, site)
    theirs = site / "simple" / "other" / "x-1.0-py3-none-any.whl"
    theirs.parent.mkdir()
    theirs.write_bytes(b"PK the user's own wheel")
    manifest = site / simple_index.MANIFEST
    data = json.loads(manifest.read_text())
    data["files"][theirs.relative_to(site).as_posix()] = hashlib.sha256(theirs.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(data))
    capsys.readouterr()
    simple_index.build_index(wheelhouse, site)
    assert theirs.read_bytes() == b"PK the user's own wheel"
    assert "is not signed by this user's key" in capsys.readouterr().out
    # the list written now is signed again: what this run wrote is its own once more
    assert simple_index._read_manifest(site) and "signature" in json.loads(manifest.read_text())
    # another user's key (a site copied from elsewhere): not trusted either
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-user"))
    assert simple_index._read_manifest(site, echo=lambda line: None) == {}


@pytest.mark.parametrize("link", ["simple", "simple/tiny-tool"])
def test_a_link_in_the_output_path_is_refused_and_nothing_outside_is_touched(wheelhouse, tmp_path, capsys, link):
    # probe F06d: OUT/simple a symlink to a folder outside (a site checkout holding a link)
    out = tmp_path / "site"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs.txt").write_text("theirs\n")
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(outside, target_is_directory=True)
    with pytest.raises(SystemExit) as exit_:
        main(["index", str(wheelhouse), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is a symbolic link" in err and err.count("\n") == 1
    assert sorted(p.name for p in outside.iterdir()) == ["theirs.txt"]
    assert not (out / "index.html").exists()
