"""moshi-rocm models (wheels/src/moshi_rocm/models.py) against a local HTTP server (127.0.0.1)
that serves generated files with Range support and can misbehave: a 500 once, a connection
dropped mid-file, a 404, a wrong file. HF_ENDPOINT points the lists' host at it.

The build side (builder/package/models.py: model lists read from the source as hostile
input) is tested at the end.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from builder.errors import BuildStepError
from builder.package import models as build_models
from tests.wheels.test_doctor import PYTHON, install_base, machine

HOST = "https://huggingface.co"


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD with Range; server.faults: path -> list of "500" | "drop" | "404" | "endless" consumed per
    request ("endless": no Content-Length, the file then more bytes until the client stops reading);
    server.redirects: path -> the base URL of another server it is sent to (302)."""

    def log_message(self, *args) -> None:
        pass

    def _serve(self, body: bool) -> None:
        path = self.path.split("?")[0]
        self.server.requests.append((self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
        if path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[path] + path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        faults = self.server.faults.get(path) or []
        fault = faults.pop(0) if faults and self.command == "GET" else None
        data = self.server.files.get(path)
        if data is None or fault == "404":
            self.send_error(404)
            return
        if fault == "500":
            self.send_error(500)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        if fault == "endless":
            self.send_header("Connection", "close")
        elif not (self.command == "HEAD" and path in self.server.sizeless):   # a server that does not say
            self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        chunk = data[start:]
        if fault == "endless":
            self.close_connection = True
            try:
                self.wfile.write(chunk)
                for _ in range(64):                     # 64 MB at most: the client should stop long before
                    self.wfile.write(b"E" * (1 << 20))
                    self.server.endless_sent += 1 << 20
            except OSError:
                pass
            return
        if fault == "drop":
            chunk = chunk[: len(chunk) // 2]
            self.wfile.write(chunk)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def do_GET(self) -> None:
        self._serve(True)

    def do_HEAD(self) -> None:
        self._serve(False)


def start_server() -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    srv.files, srv.faults, srv.requests, srv.sizeless, srv.redirects = {}, {}, [], set(), {}
    srv.endless_sent = 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.endpoint = "http://127.0.0.1:%d" % srv.server_address[1]
    return srv


@pytest.fixture
def server():
    srv = start_server()
    yield srv
    srv.shutdown()


def entry(server, out: str, data: bytes, digest: str | None = None) -> dict:
    path = "/Org/repo/resolve/abc/" + out.split("/")[-1]
    server.files[path] = data
    return {"url": HOST + path, "out": out, "algorithm": "sha256",
            "digest": digest or hashlib.sha256(data).hexdigest()}


class Site(type(Path())):
    """The site folder, with the models.json it holds."""

    def __new__(cls, path, doc):
        self = super().__new__(cls, path)
        self.doc = doc
        return self

    def __init__(self, path, doc):    # Python 3.12+ passes the arguments to __init__ too
        try:
            super().__init__(path)
        except TypeError:
            pass


@pytest.fixture
def site(tmp_path, server):
    """A base package with a models.json of two models sharing one file."""
    site = tmp_path / "site"
    pkg = install_base(site)
    common = entry(server, "Org/common/tokenizer.model", os.urandom(50_000))
    tts = entry(server, "Org/tts-GGUF/model.gguf", os.urandom(3_000_000))
    stt = entry(server, "Org/stt-GGUF/stt.gguf", os.urandom(200_000))
    doc = {"schema": 1, "source": "test", "skipped": {},
           "models": {"tts": {"list": "Org_tts-GGUF.txt", "files": [tts, common]},
                      "stt": {"list": "Org_stt-GGUF.txt", "files": [stt, common]}},
           "tools": {"fake-tool": {"folder": "Org/tts-GGUF", "model": "tts"}}}
    (pkg / "models.json").write_text(json.dumps(doc))
    return Site(site, doc)


def run_models(site: Path, cache: Path, server, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site), "MODEL_CACHE": str(cache),
           "HF_ENDPOINT": server.endpoint, **extra}
    r = subprocess.run([PYTHON, "-m", "moshi_rocm", "models", *args], env=env, capture_output=True, text=True,
                       timeout=120, cwd="/")
    print(r.stdout, r.stderr)
    return r


def test_download_resumes_retries_and_checks_then_list_and_verify(site, server, tmp_path):
    cache = tmp_path / "cache"
    big = "/Org/repo/resolve/abc/model.gguf"
    server.faults[big] = ["drop", "500"]          # half the file, then a server error, then the rest
    r = run_models(site, cache, server, "download", "tts", HF_TOKEN="secret")
    assert r.returncode == 0, r.stderr
    for f in site.doc["models"]["tts"]["files"]:
        assert hashlib.sha256((cache / f["out"]).read_bytes()).hexdigest() == f["digest"]
        assert not (cache / (f["out"] + ".part")).exists()
    gets = [q for q in server.requests if q[0] == "GET" and q[1] == big]
    assert gets[0][2] is None and gets[-1][2] == "bytes=1500000-"      # resumed where the drop left it
    assert all(q[3] == "Bearer secret" for q in server.requests)        # HF_TOKEN to the models' host
    listed = run_models(site, cache, server, "list").stdout
    assert "tts                          present  2 files (the default of fake-tool)" in listed
    assert "stt                          partial  2 files" in listed     # its tokenizer is shared
    assert run_models(site, cache, server, "verify", "tts").returncode == 0
    (cache / "Org/tts-GGUF/model.gguf").write_bytes(b"corrupt")
    bad = run_models(site, cache, server, "verify")
    assert bad.returncode == 3 and "BAD  Org/tts-GGUF/model.gguf" in bad.stdout


def test_list_gives_the_sizes_the_server_says_when_asked(site, server, tmp_path):
    r = run_models(site, tmp_path / "cache", server, "list", "--sizes")
    assert r.returncode == 0, r.stderr
    assert "tts                          missing  2 files  0.00 GB (the default of fake-tool)" in r.stdout
    assert {q[1] for q in server.requests if q[0] == "HEAD"} == set(server.files)      # HEAD only
    assert not any(q[0] == "GET" for q in server.requests)
    server.sizeless.add("/Org/repo/resolve/abc/stt.gguf")
    r = run_models(site, tmp_path / "cache", server, "list", "stt", "--sizes")
    assert r.stdout.splitlines()[1:] == ["stt                          missing  2 files  size unknown"]
    r = run_models(site, tmp_path / "cache", server, "list", "--sizes", MOSHI_ROCM_OFFLINE="1")
    assert r.returncode == 7 and "list without --sizes" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")
def test_a_full_disk_mid_file_keeps_the_partial_file_for_the_resume(site, server, tmp_path):
    """A real full file system: a 1 MB tmpfs; the server does not say the size, so the check before
    starting cannot refuse, and the disk fills up in the middle of the 3 MB file."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        big = "/Org/repo/resolve/abc/model.gguf"
        server.sizeless.add(big)
        r = run_models(site, small / "models", server, "download", "tts")
        assert r.returncode == 5, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("moshi-rocm models: no space left in") and "the partial file is kept" in last
        part = small / "models" / "Org/tts-GGUF/model.gguf.part"
        kept = part.stat().st_size
        assert 0 < kept < 3_000_000 and not part.with_suffix("").exists()
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        server.requests.clear()
        r = run_models(site, small / "models", server, "download", "tts")
        assert r.returncode == 0, r.stderr
        assert [q[2] for q in server.requests if q[0] == "GET" and q[1] == big] == [f"bytes={kept}-"]
        assert hashlib.sha256(part.with_suffix("").read_bytes()).hexdigest() == site.doc["models"]["tts"]["files"][0]["digest"]
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_a_checksum_mismatch_removes_the_file_and_says_so(site, server, tmp_path):
    cache = tmp_path / "cache"
    server.files["/Org/repo/resolve/abc/stt.gguf"] = b"not what the list says"
    r = run_models(site, cache, server, "download", "stt")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].startswith("moshi-rocm models: Org/stt-GGUF/stt.gguf: checksum mismatch")
    assert not (cache / "Org/stt-GGUF/stt.gguf").exists() and not (cache / "Org/stt-GGUF/stt.gguf.part").exists()


@pytest.mark.parametrize("fault, code, says", [
    (["404"], 4, "HTTP 404"),
    (["500"] * 9, 4, "HTTP 500"),
])
def test_server_errors_end_in_one_line(site, server, tmp_path, fault, code, says):
    server.faults["/Org/repo/resolve/abc/stt.gguf"] = list(fault)
    r = run_models(site, tmp_path / "cache", server, "download", "stt")
    assert r.returncode == code and says in r.stderr.strip().splitlines()[-1]


def test_unknown_model_lists_the_names(site, server, tmp_path):
    r = run_models(site, tmp_path / "cache", server, "download", "nope")
    assert r.returncode == 2 and r.stderr.strip() == "moshi-rocm models: unknown model 'nope': the models are stt, tts"


def test_offline_refuses_and_an_unwritable_folder_is_one_line(site, server, tmp_path):
    r = run_models(site, tmp_path / "cache", server, "download", "stt", MOSHI_ROCM_OFFLINE="1")
    assert r.returncode == 7 and "offline" in r.stderr and server.requests == []
    if os.geteuid() != 0:       # root writes everywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        r = run_models(site, locked / "models", server, "download", "stt")
        assert r.returncode == 6 and "cannot write in the model folder" in r.stderr


def test_a_hostile_entry_in_the_wheels_list_is_refused(site, server, tmp_path):
    doc = json.loads((site / "moshi_rocm" / "models.json").read_text())
    doc["models"]["stt"]["files"][0]["out"] = "../../escape"
    (site / "moshi_rocm" / "models.json").write_text(json.dumps(doc))
    r = run_models(site, tmp_path / "cache", server, "download", "stt")
    assert r.returncode == 2 and "refusing the list entry" in r.stderr
    assert not (tmp_path / "escape").exists()


def test_remove_keeps_files_another_model_shares_and_path_prints_the_folder(site, server, tmp_path):
    cache = tmp_path / "cache"
    assert run_models(site, cache, server, "download", "--all").returncode == 0
    assert run_models(site, cache, server, "remove", "tts").returncode == 0
    assert not (cache / "Org/tts-GGUF/model.gguf").exists() and (cache / "Org/common/tokenizer.model").exists()
    assert run_models(site, cache, server, "path").stdout.strip() == str(cache)


def test_the_launcher_exports_model_cache_and_names_a_missing_default_model(site, server, tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    r = subprocess.run([PYTHON, "-m", "moshi_rocm", "fake-tool"], env=env, capture_output=True, text=True, cwd="/")
    assert r.returncode == 0      # said before the tool starts, not enforced (the tools look elsewhere too)
    assert r.stderr.strip() == ("moshi-rocm: fake-tool's default model Org/tts-GGUF is not in %s: "
                                "moshi-rocm models download tts" % (tmp_path / "xdg" / "moshi-rocm" / "models"))
    # a model named on the command line skips the check
    r = subprocess.run([PYTHON, "-m", "moshi_rocm", "fake-tool", "-m", "x"], env=env, capture_output=True, text=True,
                       cwd="/")
    assert r.returncode == 0 and r.stderr == ""
    # downloaded: the tool starts, and finds the folder through MODEL_CACHE
    assert run_models(site, tmp_path / "xdg" / "moshi-rocm" / "models", server, "download", "tts").returncode == 0
    tool = site / "moshi_rocm" / "bin" / "fake-tool"
    tool.write_text('#!/bin/sh\necho "cache=$MODEL_CACHE"\n')
    r = subprocess.run([PYTHON, "-m", "moshi_rocm", "fake-tool"], env=env, capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "cache=%s" % (tmp_path / "xdg" / "moshi-rocm" / "models")


def test_a_folder_the_tool_also_loads_from_counts_and_a_hostile_one_is_ignored(site, server, tmp_path):
    """The tool falls back to another folder (moshi-tts: kyutai/tts-1.6b-en_fr): the models.json entry's
    "also" lists it, and a model there makes the missing-model line go away. Entries that leave the
    model folder are not looked at."""
    cache = tmp_path / "cache"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site), "MODEL_CACHE": str(cache)}
    doc = json.loads((site / "moshi_rocm" / "models.json").read_text())
    doc["tools"]["fake-tool"]["also"] = ["../outside", "/abs", 5, "Org/other"]
    (site / "moshi_rocm" / "models.json").write_text(json.dumps(doc))
    (tmp_path / "outside").mkdir()
    run = lambda: subprocess.run([PYTHON, "-m", "moshi_rocm", "fake-tool"], env=env, capture_output=True, text=True,
                                 cwd="/")
    (cache / "Org").mkdir(parents=True)
    assert "default model Org/tts-GGUF is not in" in run().stderr     # ../outside exists, but does not count
    (cache / "Org" / "other").mkdir()
    assert run().stderr == ""


# --------------------------------------------------------------------------- the build side

LIST = """https://huggingface.co/Org/tts-GGUF/resolve/abc/model.gguf
 out=Org/tts-GGUF/model.gguf
 checksum=sha-256={digest}
 allow-overwrite=false
"""


def test_the_build_reads_the_lists_and_names_the_models(tmp_path):
    tools = tmp_path / "src" / "tools"
    tools.mkdir(parents=True)
    (tools / "Org_tts-GGUF.txt").write_text(LIST.format(digest="a" * 64))
    (tools / "CMakeLists.txt").write_text("project(x)\n")
    doc = build_models.collect(tmp_path / "src", ["tools/*_*.txt"], {"moshi-tts": "Org/tts-GGUF"}, "app 1")
    assert list(doc["models"]) == ["tts"] and doc["tools"] == {"moshi-tts": {"folder": "Org/tts-GGUF", "model": "tts"}}
    doc = build_models.collect(tmp_path / "src", ["tools/*_*.txt"], {"moshi-tts": "Org/tts-GGUF"}, "app 1",
                               also={"moshi-tts": ["kyutai/tts/"]})
    assert doc["tools"]["moshi-tts"]["also"] == ["kyutai/tts"]
    with pytest.raises(BuildStepError, match="moshi-stt's default model Org/stt-GGUF is in none of the model lists"):
        build_models.collect(tmp_path / "src", ["tools/*_*.txt"], {"moshi-stt": "Org/stt-GGUF"})


@pytest.mark.parametrize("out", ["../../etc/passwd", "/etc/passwd", "Org/../../x", "Org\\..\\x", "Org//x", "./x"])
def test_the_build_refuses_a_list_entry_that_leaves_the_model_folder(tmp_path, out):
    text = LIST.format(digest="a" * 64).replace("out=Org/tts-GGUF/model.gguf", "out=" + out)
    with pytest.raises(BuildStepError, match=r"line 2: out=.* is not a plain relative path inside the model folder"):
        build_models.parse_list(text, "Org_tts-GGUF.txt")


def test_the_build_refuses_a_bad_url_or_checksum(tmp_path):
    with pytest.raises(BuildStepError, match="is not an https URL"):
        build_models.parse_list("http://example.com/x\n out=a\n", "l.txt")
    with pytest.raises(BuildStepError, match="is not sha-256="):
        build_models.parse_list(LIST.format(digest="zz"), "l.txt")


# ------------------------------------------------------------------ hostile lists and servers (issue 24)

@pytest.mark.parametrize("models, says", [
    ('{"models": {"m": "a string"}}', "model 'm' is not an object with a list of files"),            # M05
    ('{"models": {"m": {}}}', "model 'm' is not an object with a list of files"),                     # M06
    ('{"models": {"m": {"files": {"a": 1}}}}', "model 'm' is not an object with a list of files"),
    ('{"models": {"m": {"files": [5]}}}', "refusing the list entry"),
    ('{"models": {}, "tools": {"fake-tool": "tts"}}', "its tools are not an object of objects"),
    ('{"models": {}, "tools": []}', "its tools are not an object of objects"),
    ("[" * 200_000 + "]" * 200_000, "is unreadable"),                                                    # M18b
    (b'{"models": {"\\xff": 1}}', "is unreadable"),
])
def test_a_broken_models_json_is_one_line_saying_to_reinstall(site, server, tmp_path, models, says):
    target = site / "moshi_rocm" / "models.json"
    target.write_bytes(models if isinstance(models, bytes) else models.encode())
    for command in (["list"], ["download", "--all"], ["verify"]):
        r = run_models(site, tmp_path / "cache", server, *command)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-500:]
        assert lines[0].startswith("moshi-rocm models: ") and says in lines[0] and "reinstall the wheel" in lines[0]
    assert server.requests == []


@pytest.mark.parametrize("jobs", ["-5", "0", "17", "x", "\u00b2"])
def test_download_jobs_is_a_number_from_1_to_16(site, server, tmp_path, jobs):
    r = run_models(site, tmp_path / "cache", server, "download", "stt", "--jobs", jobs)   # M17
    assert r.returncode == 2 and "argument --jobs" in r.stderr and "from 1 to 16" in r.stderr
    assert server.requests == [] and not (tmp_path / "cache").exists()


def test_the_token_is_not_sent_to_another_host_on_a_redirect(site, server, tmp_path):
    """M19: HF_ENDPOINT (a mirror) sends the download on to another host (a CDN): the file comes from
    there, HF_TOKEN does not go there; a redirect to the same host keeps it."""
    other = start_server()
    try:
        stt = "/Org/repo/resolve/abc/stt.gguf"
        tok = "/Org/repo/resolve/abc/tokenizer.model"
        for path in (stt, tok):
            other.files[path] = server.files[path]
        server.redirects[stt] = other.endpoint.replace("127.0.0.1", "localhost")     # another host name
        server.redirects[tok] = other.endpoint                                         # another port
        r = run_models(site, tmp_path / "cache", server, "download", "stt", HF_TOKEN="secret-token")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "cache" / "Org/stt-GGUF/stt.gguf").read_bytes() == server.files[stt]
        assert all(q[3] == "Bearer secret-token" for q in server.requests)       # the mirror itself gets it
        assert other.requests and all(q[3] is None for q in other.requests), other.requests
        assert {q[0] for q in other.requests} == {"HEAD", "GET"}                # a HEAD stays a HEAD
    finally:
        other.shutdown()
    # the same host (scheme, name and port) keeps the header; another host, port or scheme does not
    models = template_models()
    req = models._request(server.endpoint + "/x", {"HF_TOKEN": "t", "HF_ENDPOINT": server.endpoint})
    handler = models._SameOriginAuth()
    same = handler.redirect_request(req, None, 302, "Found", {}, server.endpoint + "/elsewhere")
    assert same.get_header("Authorization") == "Bearer t"
    for url in ("http://localhost:1/x", server.endpoint.replace("http:", "https:") + "/x"):
        assert handler.redirect_request(req, None, 302, "Found", {}, url).get_header("Authorization") is None


def template_models():
    from tests.wheels.test_doctor import template_module
    return template_module("models")


def test_an_endless_answer_stops_at_the_size_the_server_gave(site, server, tmp_path):
    """M12: the GET gives no Content-Length and does not end: what is written stops at the size a HEAD
    gave (plus nothing), the part is removed, one line."""
    stt = "/Org/repo/resolve/abc/stt.gguf"
    server.faults[stt] = ["endless"]
    r = run_models(site, tmp_path / "cache", server, "download", "stt")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert lines[-1].startswith("moshi-rocm models: Org/stt-GGUF/stt.gguf: ") and \
        "sends more than %d bytes, the size it gave" % len(server.files[stt]) in lines[-1]
    assert not (tmp_path / "cache" / "Org/stt-GGUF/stt.gguf.part").exists()
    assert server.endless_sent < 16 << 20


def test_an_endless_answer_of_unknown_size_stops_at_the_cap(server, tmp_path, monkeypatch):
    """Neither the GET nor a HEAD gives a size: what is written for one file stops at MAX_FILE."""
    import io

    models = template_models()
    monkeypatch.setattr(models, "MAX_FILE", 3 << 20)
    e = entry(server, "a/x.bin", os.urandom(1024))
    path = e["url"][len(HOST):]
    server.faults[path] = ["endless"]
    server.sizeless.add(path)
    folder = tmp_path / "models"
    doc = {"models": {"m": {"files": [e]}}}
    with pytest.raises(models.ModelsError) as caught:
        models.download(doc, ["m"], folder, {"HF_ENDPOINT": server.endpoint}, stream=io.StringIO())
    assert caught.value.code == 4 and "sends more than %d bytes;" % (3 << 20) in str(caught.value)
    assert not (folder / "a/x.bin.part").exists() and not (folder / "a/x.bin").exists()
