import os
import signal
from pathlib import Path

import pytest

from builder.cache import default_cache_root

# A runner that starts the tests in the background (`cmd &` without job control)
# hands them SIGINT ignored, and children inherit that; the Ctrl-C tests need the
# ordinary behaviour, in this process and in the processes it starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
SHARED_MIRROR = REPO.parent / "shared" / "mirror"
# Slow tests reuse the machine's real cache (root filesystem, sources, builds) when
# it is there and fill it when not; read before any test changes the environment.
SHARED_CACHE = default_cache_root()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Tests never touch the user's cache or pick up a developer's mirror settings.
    for var in ("MOSHI_BUILD_CACHE_DIR", "MOSHI_BUILD_MIRROR", "MOSHI_BUILD_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


import http.server
import threading


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def file_server(tmp_path):
    """Serve a directory on 127.0.0.1; `.requests` lists the paths asked for."""
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **kw: _RecordingHandler(*a, directory=str(root), **kw)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    server.root = root
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def clean_root():
    """A root filesystem with Python and nothing else (builder/environments/clean.py), made once."""
    if os.geteuid() != 0:
        pytest.skip("the clean root filesystem needs root (mmdebstrap, chroot)")
    from builder.environments.clean import CleanRoot

    root = CleanRoot(SHARED_CACHE / "envs")
    root.ensure()
    return root
