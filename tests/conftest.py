import http.server
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from builder import pipeline
from builder.envs import DebianEnvironment
from builder.sources.recipe import load_recipes, select_application
from tests.helpers.slow import SHARED_CACHE, TESTAPP, fetch_options
from tests.helpers.tokenizer import train_tiny_tokenizer

# A runner that starts the tests in the background (`cmd &` without job control)
# hands them SIGINT ignored, and children inherit that; the Ctrl-C tests need the
# ordinary behaviour, in this process and in the processes it starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Tests never touch the user's cache or pick up a developer's mirror settings.
    for var in ("MOSHI_BUILD_CACHE_DIR", "MOSHI_BUILD_MIRROR", "MOSHI_BUILD_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))   # the wheel cache's signing key


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()

    def copyfile(self, source, outputfile):
        # server.chunk_delay > 0: a slow link (64 KiB, then a pause), so transfers overlap.
        delay = getattr(self.server, "chunk_delay", 0)
        if not delay:
            return super().copyfile(source, outputfile)
        while chunk := source.read(1 << 16):
            outputfile.write(chunk)
            outputfile.flush()
            time.sleep(delay)


@pytest.fixture
def file_server(tmp_path):
    """Serve a directory on 127.0.0.1; `.requests` lists the paths asked for, `.chunk_delay`
    (seconds after each 64 KiB, default 0) slows every answer down."""
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **kw: _RecordingHandler(*a, directory=str(root), **kw)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    server.chunk_delay = 0
    server.root = root
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    # shutdown() waits for the loop's next poll: a short interval keeps each test's teardown short.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def clean_root():
    """A root filesystem with Python and nothing else (builder/envs/clean.py), made once: the
    glibc floor's system (runtime.toml [glibc_floor]: bullseye, glibc 2.31, Python 3.9), where
    the slow tier installs and runs the wheels and verify runs their comgr."""
    if os.geteuid() != 0:
        pytest.skip("the clean root filesystem needs root (mmdebstrap, chroot)")
    from builder.envs.clean import CleanRoot
    from builder.package.rules import load_runtime_spec

    root = CleanRoot(SHARED_CACHE / "envs", suite=load_runtime_spec().glibc_floor.suite)
    root.ensure()
    return root


@pytest.fixture(scope="session")
def clean_root_of():
    """clean_root_of("bullseye"): the clean root of one of environments.toml's [clean] suites, made once."""
    if os.geteuid() != 0:
        pytest.skip("the clean root filesystems need root (mmdebstrap, chroot)")
    from builder.envs.clean import CleanRoot

    made = {}

    def of(suite: str):
        if suite not in made:
            made[suite] = CleanRoot(SHARED_CACHE / "envs", suite=suite)
            made[suite].ensure()
        return made[suite]
    return of


# -- the slow tier's shared fixtures: one real build, one testapp wheel, one install per session --

@pytest.fixture(scope="session")
def environment():
    if os.geteuid() != 0:
        pytest.skip("the Debian build environment needs root")
    return DebianEnvironment(SHARED_CACHE / "envs")


@pytest.fixture(scope="session")
def built(environment):
    recipes = select_application(load_recipes(extra=[TESTAPP]), "testapp")
    report = pipeline.build(recipes, ["gfx1100"], environment, fetch_options(), progress=False)
    return recipes, report


@pytest.fixture(scope="session")
def testapp_wheels(built, environment, tmp_path_factory):
    """The test application's base wheel and its gfx1100 wheel, made by the pipeline."""
    recipes, report = built
    tmp = tmp_path_factory.mktemp("testapp-wheel")
    base, target = pipeline.make_wheels(recipes, report, ["gfx1100"], environment, tmp / "wheelhouse", echo=print)
    for path in (base, target):
        print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
    return base, target


@pytest.fixture(scope="session")
def testapp_wheel(testapp_wheels):
    """The gfx1100 target wheel (its base beside it in the same folder)."""
    return testapp_wheels[1]


@pytest.fixture(scope="session")
def testapp_base_wheel(testapp_wheels):
    return testapp_wheels[0]


@pytest.fixture(scope="session")
def installed_testapp_wheel(testapp_wheels, clean_root, tmp_path_factory):
    """The gfx1100 wheel installed by name from a local folder holding both wheels (pip finds the
    base it requires), into a fresh venv of the clean root (no ROCm, compiler, FFmpeg, SDL2)."""
    testapp_wheel = testapp_wheels[1]
    name = testapp_wheel.name.split("-")[0].replace("_", "-")
    venv = clean_root.install(testapp_wheels, "testapp-gfx1100", by_name=[name])
    tmp = tmp_path_factory.mktemp("testapp-data")
    inner = Path("/tmp") / f"moshi-wheel-test-{os.getpid()}"
    data = clean_root.host_path(inner)
    data.mkdir(parents=True, exist_ok=True)
    train_tiny_tokenizer(tmp)
    shutil.copy(tmp / "tiny.model", data / "tiny.model")
    (data / "audio").mkdir(exist_ok=True)
    yield testapp_wheel, venv.bindir, venv.run, inner, venv
    shutil.rmtree(data, ignore_errors=True)
    venv.remove()


