"""builder.sources.download against a scriptable HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import http.server
import re
import socket
import threading
import time
import types

import pytest
import requests

from builder.sources import download as download_mod
from builder.common.files import sha256_file
from builder.sources.download import download
from builder.errors import ChecksumMismatchError, DiskFullError, DownloadError

DATA = bytes(range(256)) * 800  # 200 KiB, several chunks
SHA = hashlib.sha256(DATA).hexdigest()


@dataclasses.dataclass
class Route:
    """How the server answers one path; counters are per path."""

    data: bytes = DATA
    status: int | None = None  # always answer this status, no body
    fail_times: int = 0  # first answer `fail_status` this many times
    fail_status: int = 500
    truncate_times: int = 0  # then send only `truncate_at` bytes of the body and close
    truncate_at: int = 0
    stall_once: float = 0.0  # first request: sleep this long before the headers
    stall_body_once: float = 0.0  # first request: sleep this long halfway through the body
    honour_range: bool = True
    redirect: str | None = None
    headers: dict = dataclasses.field(default_factory=dict)
    served: int = 0


@dataclasses.dataclass
class Hit:
    path: str
    range: str | None
    accept_encoding: str | None
    status: int = 0
    sent: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        hit = Hit(self.path, self.headers.get("Range"), self.headers.get("Accept-Encoding"))
        self.server.hits.append(hit)
        route = self.server.routes.get(self.path)
        if route is None:
            return self._empty(hit, 404)
        with self.server.lock:
            n = route.served
            route.served += 1
        try:
            self._answer(route, n, hit)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests): expected

    def _answer(self, route: Route, n: int, hit: Hit):
        if route.stall_once and n == 0:
            time.sleep(route.stall_once)
        if n < route.fail_times:
            return self._empty(hit, route.fail_status)
        if route.status:
            return self._empty(hit, route.status)
        if route.redirect:
            return self._empty(hit, 302, {"Location": route.redirect})
        body, status, extra = route.data, 200, dict(route.headers)
        m = re.fullmatch(r"bytes=(\d+)-", hit.range or "")
        if m and route.honour_range:
            start = int(m.group(1))
            if start >= len(body):
                return self._empty(hit, 416, {"Content-Range": f"bytes */{len(body)}"})
            status, body = 206, body[start:]
            extra["Content-Range"] = f"bytes {start}-{len(route.data) - 1}/{len(route.data)}"
        hit.status = status
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if n < route.truncate_times:
            body = body[: route.truncate_at]
        if route.stall_body_once and n == 0:
            half = len(body) // 2
            hit.sent += half  # counted before writing: the client may finish before this thread resumes
            self.wfile.write(body[:half])
            self.wfile.flush()
            time.sleep(route.stall_body_once)
            body = body[half:]
        hit.sent += len(body)
        self.wfile.write(body)

    def _empty(self, hit: Hit, status: int, headers: dict | None = None):
        hit.status = status
        self.send_response(status)
        self.send_header("Content-Length", "0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # clients hanging up mid-answer are part of the tests


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes, srv.hits, srv.lock = {}, [], threading.Lock()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def serve(server, route: Route, path: str = "/f.tar.gz") -> str:
    server.routes[path] = route
    return server.url + path


def fetch(url, dest, **kw):
    kw.setdefault("sha256", SHA)
    kw.setdefault("backoff", 0)
    kw.setdefault("progress", False)
    return download(url, dest, **kw)


def part_of(dest):
    return dest.parent / (dest.name + ".part")


def assert_done(dest, data=DATA):
    assert dest.read_bytes() == data
    assert not part_of(dest).exists()


# --- the plain path -----------------------------------------------------------


def test_success_writes_verified_file_and_no_part(server, tmp_path):
    dest = tmp_path / "new" / "dir" / "f.tar.gz"
    assert fetch(serve(server, Route()), dest, description="f") == dest
    assert_done(dest)
    assert sha256_file(dest) == SHA
    assert [(h.range, h.status, h.sent) for h in server.hits] == [(None, 200, len(DATA))]
    assert server.hits[0].accept_encoding == "identity"


def test_progress_bar_enabled_does_not_disturb(server, tmp_path):
    dest = tmp_path / "f"
    fetch(serve(server, Route()), dest, progress=True, description="demo")
    assert_done(dest)


def test_redirect_is_followed(server, tmp_path):
    serve(server, Route(), "/real")
    dest = tmp_path / "f"
    fetch(serve(server, Route(redirect="/real")), dest)
    assert_done(dest)
    assert [h.path for h in server.hits] == ["/f.tar.gz", "/real"]


def test_content_encoding_is_not_decoded(server, tmp_path):
    # Some servers label .tar.gz files `Content-Encoding: gzip`; the pinned hash is of the stored bytes.
    packed = gzip.compress(b"hello " * 1000)
    dest = tmp_path / "f.tar.gz"
    url = serve(server, Route(data=packed, headers={"Content-Encoding": "gzip"}))
    fetch(url, dest, sha256=hashlib.sha256(packed).hexdigest())
    assert_done(dest, packed)


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "big"
    p.write_bytes(DATA * 10)  # several of its 1 MiB blocks
    assert sha256_file(p) == hashlib.sha256(DATA * 10).hexdigest()


def test_file_url(tmp_path):
    src = tmp_path / "src.tar.gz"
    src.write_bytes(DATA)
    dest = tmp_path / "out" / "f.tar.gz"
    fetch(src.as_uri(), dest)
    assert_done(dest)
    with pytest.raises(DownloadError, match="cannot read"):
        fetch((tmp_path / "missing").as_uri(), tmp_path / "g")


# --- verification -------------------------------------------------------------


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "f.tar.gz"
    url = serve(server, Route())
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as e:
        fetch(url, dest, sha256=wrong)
    msg = str(e.value)
    assert wrong in msg and SHA in msg and url in msg and "re-check the recipe's sha256" in msg
    assert "\n" not in msg
    assert not dest.exists() and not part_of(dest).exists()
    assert len(server.hits) == 1  # a single clean transfer is not repeated


def test_corrupt_partial_is_replaced_by_one_clean_transfer(server, tmp_path):
    dest = tmp_path / "f"
    part_of(dest).write_bytes(b"\xff" * 1000)  # wrong bytes: the joined file cannot verify
    fetch(serve(server, Route()), dest)
    assert_done(dest)
    assert [(h.range, h.status) for h in server.hits] == [("bytes=1000-", 206), (None, 200)]


def test_resumed_mismatch_is_confirmed_by_a_clean_transfer_then_raised(server, tmp_path):
    dest = tmp_path / "f"
    part_of(dest).write_bytes(DATA[:1000])
    with pytest.raises(ChecksumMismatchError):
        fetch(serve(server, Route()), dest, sha256="1" * 64)
    assert [h.range for h in server.hits] == ["bytes=1000-", None]
    assert not dest.exists() and not part_of(dest).exists()


# --- resume -------------------------------------------------------------------


def test_truncated_transfer_is_resumed(server, tmp_path):
    dest = tmp_path / "f"
    fetch(serve(server, Route(truncate_times=1, truncate_at=50_000)), dest)
    assert_done(dest)
    assert [(h.range, h.status, h.sent) for h in server.hits] == [
        (None, 200, 50_000),
        ("bytes=50000-", 206, len(DATA) - 50_000),
    ]


def test_existing_partial_is_resumed_with_only_the_rest_sent(server, tmp_path):
    dest = tmp_path / "f"
    part_of(dest).write_bytes(DATA[:12345])
    fetch(serve(server, Route()), dest)
    assert_done(dest)
    assert [(h.range, h.status, h.sent) for h in server.hits] == [("bytes=12345-", 206, len(DATA) - 12345)]


def test_server_ignoring_range_gives_the_right_file(server, tmp_path):
    dest = tmp_path / "f"
    part_of(dest).write_bytes(b"\xff" * 5000)  # would corrupt the file if appended to
    fetch(serve(server, Route(honour_range=False)), dest)
    assert_done(dest)
    assert [(h.range, h.status, h.sent) for h in server.hits] == [("bytes=5000-", 200, len(DATA))]


def test_complete_partial_is_verified_after_416(server, tmp_path):
    dest = tmp_path / "f"
    part_of(dest).write_bytes(DATA)
    fetch(serve(server, Route()), dest)
    assert_done(dest)
    assert [(h.range, h.status) for h in server.hits] == [(f"bytes={len(DATA)}-", 416)]


def test_oversized_partial_is_discarded_after_416(server, tmp_path):
    dest = tmp_path / "f"
    part_of(dest).write_bytes(DATA + b"junk")
    fetch(serve(server, Route()), dest)
    assert_done(dest)
    assert [(h.range, h.status) for h in server.hits] == [(f"bytes={len(DATA) + 4}-", 416), (None, 200)]


def test_complete_partial_with_known_size_needs_no_request(server, tmp_path):
    dest = tmp_path / "f"
    part_of(dest).write_bytes(DATA)
    fetch(serve(server, Route()), dest, size=len(DATA))
    assert_done(dest)
    assert server.hits == []


# --- retries ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_transient_status_is_retried(server, tmp_path, status):
    dest = tmp_path / "f"
    fetch(serve(server, Route(fail_times=2, fail_status=status)), dest)
    assert_done(dest)
    assert [h.status for h in server.hits] == [status, status, 200]


@pytest.mark.parametrize("where", ["stall_once", "stall_body_once"])
def test_timeout_is_retried(server, tmp_path, where):
    dest = tmp_path / "f"
    fetch(serve(server, Route(**{where: 1.5})), dest, timeout=0.5)
    assert_done(dest)
    assert len(server.hits) == 2
    if where == "stall_body_once":
        # What arrived before the stall was kept (up to the chunk being read when it timed out).
        resumed_at = int(re.fullmatch(r"bytes=(\d+)-", server.hits[1].range).group(1))
        assert 0 < resumed_at <= len(DATA) // 2


@pytest.mark.parametrize("status", [404, 403])
def test_client_error_fails_at_once(server, tmp_path, status):
    dest = tmp_path / "f"
    url = serve(server, Route(status=status))
    with pytest.raises(DownloadError) as e:
        fetch(url, dest)
    assert f"HTTP {status}" in str(e.value) and url in str(e.value)
    assert len(server.hits) == 1
    assert not dest.exists() and not part_of(dest).exists()


def test_exhausted_retries_raise_download_error(server, tmp_path):
    dest = tmp_path / "f"
    url = serve(server, Route(fail_times=100))
    with pytest.raises(DownloadError) as e:
        fetch(url, dest, retries=2)
    msg = str(e.value)
    assert url in msg and "3 attempts" in msg and "HTTP 500" in msg and "--mirror" in msg
    assert "\n" not in msg
    assert len(server.hits) == 3
    assert not dest.exists()


def test_backoff_doubles(server, tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr(download_mod, "time", types.SimpleNamespace(sleep=slept.append))
    with pytest.raises(DownloadError):
        fetch(serve(server, Route(fail_times=100)), tmp_path / "f", retries=3, backoff=0.25)
    assert slept == [0.25, 0.5, 1.0]


def test_connection_refused_is_retried_then_reported(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="2 attempts"):
        fetch(f"http://127.0.0.1:{port}/f", tmp_path / "f", retries=1)


def test_tls_handshake_failure_is_retried(server, tmp_path):
    # https:// to a plain HTTP port: a TLS error that is not about certificates.
    with pytest.raises(DownloadError, match="2 attempts"):
        fetch(serve(server, Route()).replace("http:", "https:"), tmp_path / "f", retries=1)


def test_certificate_failure_is_not_retried(tmp_path):
    calls = []

    class Session:
        def get(self, url, **kw):
            calls.append(url)
            raise requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")

    with pytest.raises(DownloadError, match="certificate"):
        fetch("https://127.0.0.1:9/f", tmp_path / "f", session=Session())
    assert len(calls) == 1


def test_credentials_stay_out_of_messages(server, tmp_path):
    serve(server, Route(status=404))
    with pytest.raises(DownloadError) as e:
        fetch(server.url.replace("//", "//user:s3cret@") + "/f.tar.gz", tmp_path / "f")
    assert "s3cret" not in str(e.value) and "127.0.0.1" in str(e.value)


# --- local failures -----------------------------------------------------------


class _FailingWrites:
    """Wraps a file opened for writing; raises `exc` once `limit` bytes went in."""

    def __init__(self, f, limit, exc):
        self.f, self.limit, self.exc, self.n = f, limit, exc, 0

    def write(self, b):
        self.f.write(b)
        self.n += len(b)
        if self.n >= self.limit:
            raise self.exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fail_writes_after(monkeypatch, limit, exc):
    def fake_open(path, mode="r", *a, **kw):
        f = open(path, mode, *a, **kw)
        return _FailingWrites(f, limit, exc) if "b" in mode and mode[0] in "wa" else f

    monkeypatch.setattr(download_mod, "open", fake_open, raising=False)


def test_disk_full_keeps_partial_and_names_directory(server, tmp_path, monkeypatch):
    dest = tmp_path / "cache" / "f"
    url = serve(server, Route())
    fail_writes_after(monkeypatch, 70_000, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFullError) as e:
        fetch(url, dest)
    assert str(dest.parent) in str(e.value)
    assert not dest.exists()
    kept = part_of(dest).stat().st_size
    assert kept >= 70_000
    assert len(server.hits) == 1  # no retries against a full disk

    monkeypatch.undo()
    fetch(url, dest)
    assert_done(dest)
    assert server.hits[-1].range == f"bytes={kept}-"


def test_keyboard_interrupt_leaves_only_the_partial(server, tmp_path, monkeypatch):
    dest = tmp_path / "f"
    url = serve(server, Route())
    fail_writes_after(monkeypatch, 70_000, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        fetch(url, dest)
    assert not dest.exists()
    kept = part_of(dest).read_bytes()
    assert len(kept) >= 70_000 and DATA.startswith(kept)
    assert len(server.hits) == 1

    monkeypatch.undo()
    fetch(url, dest)
    assert_done(dest)
    assert server.hits[-1].range == f"bytes={len(kept)}-"


# --- bounds (probe 24: U01, U02, U04) -----------------------------------------


def test_a_file_url_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    # probes U01 (file:///dev/zero) and U02 (a FIFO with no writer: open() would block)
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for src in (fifo, "/dev/zero"):
        dest = tmp_path / "out" / "f.tar.gz"
        with pytest.raises(DownloadError, match="not a regular file"):
            fetch(f"file://{src}", dest)
        assert not part_of(dest).exists()


def test_a_file_url_larger_than_the_bound_stops_and_leaves_nothing(tmp_path):
    src = tmp_path / "big.tar.gz"
    src.write_bytes(b"\0" * (1 << 20))
    dest = tmp_path / "out" / "f.tar.gz"
    with pytest.raises(DownloadError, match="more than 65,536 bytes"):
        fetch(src.as_uri(), dest, max_size=1 << 16)
    assert not part_of(dest).exists() and not dest.exists()


def test_an_answer_without_content_length_beyond_the_bound_stops_and_leaves_nothing(tmp_path):
    # probe U04: a server sending 30 MB with no Content-Length filled the disk
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            try:
                for _ in range(64):
                    conn.sendall(b"\0" * (1 << 16))
            except OSError:
                pass    # the client stopped reading: that is the point

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    dest = tmp_path / "out" / "demo-1.0.tar.gz"
    with pytest.raises(DownloadError, match="more than 1,048,576 bytes"):
        fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/demo-1.0.tar.gz", dest, max_size=1 << 20,
              retries=0)
    assert not part_of(dest).exists() and not dest.exists()
    listener.close()


def test_a_server_sending_more_than_the_pinned_size_is_stopped(server, tmp_path):
    url = serve(server, Route(DATA * 4))
    dest = tmp_path / "out" / "f.tar.gz"
    with pytest.raises(DownloadError, match="the size the recipe pins"):
        fetch(url, dest, size=len(DATA))
    assert not part_of(dest).exists()
