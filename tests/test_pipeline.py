"""The real chain: Debian ROCm root, real sources, real builds (slow tier).

CI cannot download moshi.cpp, so the test application (tests/fixtures/testapp)
stands in for it; the same recipes build everything else for real.
"""

import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from builder import pipeline
from builder.sources import fetch as sources
from builder.common.cache import Cache
from builder.envs import DebianEnvironment
from builder.errors import TargetError
from builder.rocm.offload import fatbin_summary
from builder.sources.recipe import load_recipes, select_application
from tests.helpers.slow import SHARED_CACHE, TESTAPP, fetch_options



RUNTIME_FILES = (("lib/libggml*.so*", "ggml-core"), ("bin/libggml-*.so", "ggml-core"),
                 ("lib/libggml-hip.so", "ggml-hip"), ("lib/lib*.so*", "ffmpeg"), ("lib/lib*.so*", "opus"),
                 ("lib/libSDL2*.so*", "sdl2"))


def put_runtime_beside(directory: Path, prefixes: dict[str, Path], extra=()) -> None:
    """Copy ggml (core, CPU variants, HIP) and FFmpeg next to a tool, as its $ORIGIN RUNPATH expects."""
    for pattern, step in (*extra, *RUNTIME_FILES):
        for f in prefixes[step].glob(pattern):
            shutil.copy2(f, directory / f.name, follow_symlinks=False)


def test_unknown_target_fails_before_anything_is_created(tmp_path):
    recipes = select_application(load_recipes(extra=[TESTAPP]), "testapp")
    env = DebianEnvironment(tmp_path / "envs")
    opts = sources.FetchOptions(cache=Cache(tmp_path / "cache"), offline=True, progress=False)
    start = time.monotonic()
    with pytest.raises(TargetError, match="unknown gfx target 'gfx9999'; known targets: .*gfx1100"):
        pipeline.build(recipes, ["gfx1100", "gfx9999"], env, opts, progress=False)
    assert time.monotonic() - start < 5
    assert not (tmp_path / "envs").exists() or not any((tmp_path / "envs").iterdir())
    assert not (tmp_path / "cache" / "builds").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may create the root filesystem first
def test_unsupported_target_fails_fast_building_nothing(environment):
    recipes = select_application(load_recipes(extra=[TESTAPP]), "testapp")
    environment.ensure()  # created once (minutes on a fresh machine), then the check is instant
    builds_before = set((SHARED_CACHE / "builds").glob("*"))
    start = time.monotonic()
    with pytest.raises(TargetError, match="gfx1150: Debian's rocBLAS 7.2 ships no kernels for it; "
                                          "targets this environment supports: .*gfx1100.*gfx1151.*gfx1201"):
        pipeline.build(recipes, ["gfx1150"], environment, fetch_options(), progress=False)
    assert time.monotonic() - start < 5
    assert set((SHARED_CACHE / "builds").glob("*")) == builds_before


@pytest.mark.slow
@pytest.mark.timeout(4800)  # on a fresh machine this includes the whole build
def test_full_build_then_cache_hit(built, environment):
    recipes, report = built
    labels = {r.label for r in report.results}
    assert labels == {"sentencepiece", "opus", "ffmpeg", "sdl2", "ggml-core", "ggml-hip[gfx1100]", "testapp"}
    for r in report.results:
        print(f"{r.label}: {'cached' if r.cached else f'{r.seconds:.0f} s'}")

    start = time.monotonic()
    again = pipeline.build(recipes, ["gfx1100"], environment, fetch_options(), progress=False)
    assert all(r.cached for r in again.results)
    assert time.monotonic() - start < 10


@pytest.mark.slow
@pytest.mark.timeout(4800)  # on a fresh machine this includes the whole build
def test_hip_backend_holds_only_its_targets_code(built):
    _, report = built
    hip = next(r for r in report.results if r.step == "ggml-hip")
    summary = fatbin_summary(hip.prefix / "lib" / "libggml-hip.so")
    assert summary is not None and summary.bundles > 0
    assert set(summary.targets) == {"gfx1100"}


@pytest.mark.slow
@pytest.mark.timeout(4800)  # on a fresh machine this includes the whole build
def test_built_testapp_runs_against_the_built_libraries(built, environment, tmp_path):
    """Put the tool beside its libraries like the wheel will, and run its checks in the root."""
    _, report = built
    prefixes = {r.step: r.prefix for r in report.results}
    run_dir = SHARED_CACHE / "work" / f"testapp-run-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "bin").mkdir(parents=True)
    try:
        bin_dir = run_dir / "bin"
        put_runtime_beside(bin_dir, prefixes, (("bin/*", "testapp"),))
        with environment.session([SHARED_CACHE]) as session:
            for check in (["devices"], ["matmul"], ["audio", str(run_dir / "audio")], ["sdl"]):
                (run_dir / "audio").mkdir(exist_ok=True)
                out = session.run([str(bin_dir / "moshi-testapp"), *check], cwd=run_dir)
                print(out.stdout, out.stderr)
                assert out.returncode == 0, out.stdout + out.stderr
                assert "FAIL" not in out.stdout
        assert (run_dir / "audio" / "sine.wav").exists()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


MOSHI_TOOLS = ("moshi-tts", "moshi-stt", "moshi-sts", "mimi-encode", "mimi-decode", "mimi-play",
               "mimi-echo", "personaplex")


@pytest.mark.slow
@pytest.mark.timeout(4800)  # on a fresh machine this includes the whole build
def test_real_moshi_cpp_when_its_source_is_given(environment):
    """Set MOSHI_BUILD_MOSHI_CPP_SOURCE=DIR (a checkout of the pinned commit) to run this."""
    source = os.environ.get("MOSHI_BUILD_MOSHI_CPP_SOURCE")
    if not source:
        pytest.skip("MOSHI_BUILD_MOSHI_CPP_SOURCE is not set (moshi.cpp cannot be downloaded here)")
    opts = fetch_options()
    opts.overrides = sources.parse_overrides([f"moshi.cpp={source}"])
    recipes = select_application(load_recipes(), "moshi.cpp")
    report = pipeline.build(recipes, ["gfx1100"], environment, opts, progress=False)
    prefixes = {r.step: r.prefix for r in report.results}
    bin_dir = prefixes["moshi.cpp"] / "bin"
    for tool in MOSHI_TOOLS:
        assert (bin_dir / tool).is_file(), tool
    assert (bin_dir / "moshi-config.json").is_file() and (bin_dir / "libmoshi.so").is_file()

    run_dir = SHARED_CACHE / "work" / f"moshi-run-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(bin_dir, run_dir)
    try:
        put_runtime_beside(run_dir, prefixes)
        with environment.session([SHARED_CACHE]) as session:
            out = session.run([str(run_dir / "moshi-tts"), "-l"], cwd=Path("/"))
        text = out.stdout + out.stderr
        print(text)
        assert "libggml-hip.so" in text and "CPU" in text
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_testapp_wheel_passes_verify(testapp_wheel, built, environment, clean_root):
    """make_wheels() verified the wheel already (it raises otherwise); here every check is read back."""
    from builder.check import code_selection
    from builder.check import verify

    recipes, report = built
    result = verify.verify_wheel(testapp_wheel,
                                 build_paths=verify.build_dirs_of(report, environment.root),
                                 probe_root=code_selection.ProbeRoot.of_clean_root(clean_root))
    print("\n".join(result.lines()), f"\n{result.seconds:.1f} s")
    assert result.ok, "\n".join(c.line for c in result.failures)
    assert [c.name for c in result.checks] == ["archive", "base-wheel", "runtime-info", "elf-closure", "rpath", "backends",
                                               "gpu-code", "kernels", "code-selection", "standins", "build-paths",
                                               "licenses", "sbom", "manylinux", "glibc-floor"]
    checks = {c.name: c for c in result.checks}
    # The ROCm 7.2 stack's stand-in for rocSOLVER is in the wheel, and only hipBLAS links it.
    assert "librocsolver.so.0 stands in for rocSOLVER 7.2.4" in checks["standins"].summary
    assert "nothing for 13 other targets" in checks["code-selection"].summary
    # manylinux_2_39 or lower
    (tag,) = {t for t in wheel_tags(testapp_wheel)}
    major, minor = map(int, tag.split("_")[1:3])
    assert (major, minor) <= (2, 39), tag


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_testapp_base_wheel_passes_verify_alone(testapp_base_wheel, built, environment, clean_root):
    from builder.check import code_selection
    from builder.check import verify

    recipes, report = built
    result = verify.verify_wheel(testapp_base_wheel, build_paths=verify.build_dirs_of(report, environment.root),
                                 probe_root=code_selection.ProbeRoot.of_clean_root(clean_root))
    print("\n".join(result.lines()))
    assert result.ok, "\n".join(c.line for c in result.failures)
    checks = {c.name: c for c in result.checks}
    assert "libz3.so.4 stands in for Z3" in checks["standins"].summary
    assert "not applicable" in checks["gpu-code"].summary
    (tag,) = {t for t in wheel_tags(testapp_base_wheel)}
    assert tuple(map(int, tag.split("_")[1:3])) <= (2, 39), tag


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_a_target_wheel_without_its_base_fails_verify(testapp_wheel, tmp_path):
    from builder.check import verify

    alone = tmp_path / testapp_wheel.name
    shutil.copy(testapp_wheel, alone)
    result = verify.verify_wheel(alone)
    assert not result.ok
    assert [c.name for c in result.failures] == ["base-wheel"]
    assert "is a target wheel: verify it with its base wheel moshi-rocm==" in result.failures[0].line


def wheel_tags(path: Path) -> list[str]:
    from packaging.utils import parse_wheel_filename

    return sorted(t.platform for t in parse_wheel_filename(path.name)[3])


def rewrite_member(wheel_path: Path, out: Path, member_suffix: str, change) -> Path:
    """A copy of the wheel with one member's bytes passed through `change` (stored, not deflated: fast)."""
    import zipfile

    with zipfile.ZipFile(wheel_path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(member_suffix):
                data = change(data)
            dst.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    return out


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_a_bundle_without_the_targets_entry_fails_code_selection(testapp_wheel, testapp_base_wheel, clean_root,
                                                                 tmp_path):
    """Sabotage: libggml-hip.so's first bundle loses its gfx1100 entry. The wheel's own comgr, asked
    what the HIP runtime asks, finds no code object there: verify fails."""
    from elftools.elf.elffile import ELFFile

    from builder.check import code_selection
    from builder.rocm import offload
    from builder.check import verify

    def drop_target(data: bytes) -> bytes:
        import io

        section = ELFFile(io.BytesIO(data)).get_section_by_name(".hip_fatbin")
        base, size = section["sh_offset"], section["sh_size"]
        fat = bytearray(data[base:base + size])
        first = next(offload.iter_bundles(fat))
        assert first.compressed  # ROCm 7.2 stack: --offload-compress
        plain = bytearray(first.plain)
        offload.trim_plain(plain, 0, {None})
        packed = offload.compress_bundle(bytes(plain), first.version, first.method)
        fat[first.start:first.start + first.extent] = packed + bytes(first.extent - len(packed))
        return data[:base] + bytes(fat) + data[base + size:]

    broken = rewrite_member(testapp_wheel, tmp_path / testapp_wheel.name, "/libggml-hip.so", drop_target)
    result = verify.verify_wheel(broken, probe_root=code_selection.ProbeRoot.of_clean_root(clean_root),
                                 base=testapp_base_wheel)
    checks = {c.name: c for c in result.checks}
    print(checks["code-selection"].line)
    assert not checks["code-selection"].ok
    assert checks["code-selection"].problems == ("libggml-hip.so bundle 0: comgr finds no gfx1100 code object",)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_testapp_wheels_split_the_code_between_base_and_target(testapp_wheels):
    from builder.common import wheel_reader as reader
    from builder.rocm import gfx

    base, target = (reader.inspect_wheel(p) for p in testapp_wheels)
    for info in (base, target):
        assert all(t.startswith("py3-none-manylinux_") for t in info.tags), info.tags
    kernels = [m for m in target.files if "/rocblas/library/" in m]
    assert kernels and {t for m in kernels for t in gfx.gfx_names_in(Path(m).name)} == {"gfx1100"}
    assert "moshi_rocm_gfx1100/libggml-hip.so" in target.files
    assert all(m.startswith(("moshi_rocm_gfx1100/", "moshi_rocm_gfx1100.libs/", "moshi_rocm_gfx1100-"))
               for m in target.files)
    assert sum(m.endswith(".so") and "libggml-cpu-" in m for m in base.files) >= 10
    assert not any("rocblas" in m or "libggml-hip" in m for m in base.files)
    assert "moshi_rocm/bin/libamdhip64.so.7" in base.files      # the shared runtime, under its SONAME
    # what PyPI takes: every file at most 100 MB
    assert base.size < 100e6 and target.size < 100e6, (base.size, target.size)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheels_are_byte_identical_when_built_again_and_a_rerun_reuses_them(built, environment, testapp_wheels,
                                                                          tmp_path):
    """Issue 15: the same build prefixes, made into wheels a second time (another folder, another
    work directory, minutes later), give the same sha256 as the session's wheels; a third run
    with the same inputs copies them from the wheel cache in seconds, without building."""
    from builder.check.compare import compare_wheels

    recipes, report = built
    cache = Cache(tmp_path / "cache")
    second = pipeline.make_wheels(recipes, report, ["gfx1100"], environment, tmp_path / "second", echo=print,
                                  cache=cache)
    for first, again in zip(testapp_wheels, second):
        result = compare_wheels(first, again)
        assert result.identical, result.line()
    lines: list[str] = []
    start = time.monotonic()
    third = pipeline.make_wheels(recipes, report, ["gfx1100"], environment, tmp_path / "third", echo=lines.append,
                                 cache=cache)
    seconds = time.monotonic() - start
    assert [p.read_bytes() == q.read_bytes() for p, q in zip(second, third)] == [True, True]
    assert sum(": cached (key " in line for line in lines) == 2, lines
    assert not any(line.startswith("verified ") or "auditwheel repair" in line for line in lines), lines
    assert seconds < 10, f"reusing two cached wheels took {seconds:.1f} s"


@pytest.mark.slow
@pytest.mark.timeout(4800)
@pytest.mark.parametrize("check", [["devices"], ["matmul"], ["tokenize", "{model}", "hello world"],
                                   ["audio", "{audio}"]])
def test_testapp_checks_pass_from_the_installed_wheel(installed_testapp_wheel, check):
    _, bindir, run, inner, _ = installed_testapp_wheel
    argv = [a.format(model=inner / "tiny.model", audio=inner / "audio") for a in check]
    # From /, not from the package: ggml must find its backends beside the tool, not in the cwd.
    r = run([bindir / "moshi-testapp", *argv], cwd="/")
    print(r.stdout, r.stderr)
    assert r.returncode == 0 and "PASS" in r.stdout and "FAIL" not in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_the_launcher_loads_the_target_wheels_backend(installed_testapp_wheel):
    """Installed by name, the target wheel brought its base; the tools (the base's console scripts)
    load the target's libggml-hip.so through GGML_BACKEND_PATH. No GPU here: ROCm has no device."""
    _, bindir, run, _, venv = installed_testapp_wheel
    r = run([bindir / "moshi-testapp", "devices"], cwd="/")
    print(r.stdout, r.stderr)
    assert r.returncode == 0 and "PASS devices" in r.stdout and "ROCm" in r.stdout, r.stdout + r.stderr
    info = run([bindir / "moshi-rocm", "info"], cwd="/")
    assert "moshi-rocm-gfx1100" in info.stdout, info.stdout


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_the_base_wheel_alone_runs_the_tools_on_the_cpu(testapp_base_wheel, clean_root):
    venv = clean_root.install([testapp_base_wheel], "testapp-base-only")
    try:
        for check in ("devices", "matmul"):
            r = venv.run([venv.bindir / "moshi-testapp", check], cwd="/")
            print(r.stdout, r.stderr)
            assert r.returncode == 0 and f"PASS {check}" in r.stdout and "FAIL" not in r.stdout, r.stdout + r.stderr
        assert "ROCm" not in venv.run([venv.bindir / "moshi-testapp", "devices"], cwd="/").stdout
        report, bad = ldd_outside_package(venv, testapp_base_wheel)
        assert len(report) > 20 and not bad, bad[:20]
    finally:
        venv.remove()


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_testapp_sdl_check_from_the_installed_wheel(installed_testapp_wheel):
    """Our audio-only SDL2 (recipes/sdl2.toml); Debian's, grafted with D-Bus, crashed in SDL_Init here."""
    _, bindir, run, _, _ = installed_testapp_wheel
    r = run([bindir / "moshi-testapp", "sdl"], env={"SDL_AUDIODRIVER": "dummy"}, cwd="/")
    assert r.returncode == 0 and "PASS sdl" in r.stdout, r.stdout + r.stderr


# Runs inside the clean root with the venv's Python: every ELF file of the installed
# package through ldd; prints JSON {file: [[soname, resolved path or null], ...]}.
LDD_SCRIPT = r"""
import json, os, subprocess, sys
out = {}
for top in sys.argv[1:]:
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
            r = subprocess.run(["ldd", p], capture_output=True, text=True)
            deps = []
            for line in r.stdout.splitlines():
                line = line.strip()
                if "=>" in line:
                    name, _, rest = line.partition("=>")
                    rest = rest.strip()
                    deps.append([name.strip(), None if rest.startswith("not found") else rest.split(" (")[0]])
            out[p] = deps
print(json.dumps(out))
"""


def ldd_outside_package(venv, wheel_path: Path) -> tuple[dict, list]:
    """(ldd report, [(file, soname, resolved)] resolved outside the package and not allowed by manylinux)."""
    import json

    from packaging.utils import parse_wheel_filename

    from builder.check import verify

    site = venv.site_packages()
    # the base's package and .libs, and every target wheel's folder and .libs
    tops = [str(Path("/") / q.relative_to(venv.clean_root.root)) for q in venv.host_path(site).glob("moshi_rocm*")
            if q.is_dir() and not q.name.endswith(".dist-info")]
    r = venv.run(["python", "-c", LDD_SCRIPT, *tops], timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    allowed = verify.claimed_policy([t.platform for t in parse_wheel_filename(wheel_path.name)[3]]).whitelist
    bad = [(f, name, path) for f, deps in report.items() for name, path in deps
           if path is None or (not path.startswith(str(site) + "/") and name not in allowed)]
    return report, bad


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_installed_testapp_wheel_needs_nothing_outside_but_manylinux(installed_testapp_wheel):
    path, _, run, _, venv = installed_testapp_wheel
    report, bad = ldd_outside_package(venv, path)
    print(f"{len(report)} ELF files checked with ldd in the clean root")
    assert len(report) > 20
    assert not bad, bad[:20]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_clean_root_has_python_and_nothing_of_ours(clean_root):
    r = clean_root.run(["sh", "-c", "command -v python3; for t in cc gcc g++ clang hipcc ffmpeg; do "
                                    "command -v $t && echo FOUND $t; done; ls /usr/lib/x86_64-linux-gnu"])
    assert r.returncode == 0, r.stderr
    assert "/usr/bin/python3" in r.stdout and "FOUND" not in r.stdout
    for lib in ("libamdhip64", "librocblas", "libavcodec", "libSDL2", "libX11"):
        assert lib not in r.stdout, lib


def wheel_without(source: Path, dest: Path, drop: re.Pattern) -> list[str]:
    """A copy of a wheel without the members `drop` matches, its RECORD rewritten to match (a wheel
    that installs, only its bundling broken; stored, not compressed: quick to write)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out:
        dropped = [name for name in src.namelist() if drop.search(name)]
        for info in src.infolist():
            if info.filename in dropped:
                continue
            if info.filename.endswith(".dist-info/RECORD"):
                lines = src.read(info).decode().splitlines(keepends=True)
                out.writestr(zipfile.ZipInfo(info.filename, info.date_time),
                             "".join(l for l in lines if l.split(",", 1)[0] not in dropped))
                out.getinfo(info.filename).external_attr = info.external_attr
                continue
            with src.open(info) as f_in, out.open(zipfile.ZipInfo(info.filename, info.date_time), "w") as f_out:
                shutil.copyfileobj(f_in, f_out, 1 << 22)
            out.getinfo(info.filename).external_attr = info.external_attr
    return dropped


SABOTAGES = {
    # FFmpeg's libraries left out: the tools need them by DT_NEEDED.
    "no-ffmpeg": (r"/bin/lib(avcodec|avformat|avfilter|avutil|swresample)\.so", "elf-closure", ["audio", "{audio}"]),
    # ggml's CPU variants left out: found by directory scan only, so nothing fails to load.
    "no-cpu-variants": (r"/bin/libggml-cpu-[a-z0-9]+\.so$", "backends", ["matmul"]),
}


@pytest.mark.slow
@pytest.mark.timeout(4800)
@pytest.mark.parametrize("sabotage", sorted(SABOTAGES))
def test_broken_bundling_is_caught_by_verify_and_by_the_installed_app(sabotage, testapp_base_wheel, built,
                                                                      environment, clean_root, tmp_path):
    """Break the base wheel's bundling on purpose: verify names the breakage, and the application
    fails in the clean root."""
    from builder.check import code_selection
    from builder.check import verify

    pattern, check, app_check = SABOTAGES[sabotage]
    broken = tmp_path / testapp_base_wheel.name
    dropped = wheel_without(testapp_base_wheel, broken, re.compile(pattern))
    assert dropped, f"the sabotage {sabotage} removed nothing: {pattern}"
    print(f"{sabotage}: removed {len(dropped)} files, e.g. {dropped[0]}")

    recipes, report = built
    result = verify.verify_wheel(broken,
                                 build_paths=verify.build_dirs_of(report, environment.root),
                                 probe_root=code_selection.ProbeRoot.of_clean_root(clean_root))
    print("\n".join(result.lines()))
    # the check that names the breakage, and the SBOM's, whose occurrences name the removed files
    assert [c.name for c in result.failures] == [check, "sbom"]
    (sbom,) = [c for c in result.failures if c.name == "sbom"]
    assert any("not in the wheel" in p for p in sbom.problems), sbom.problems

    venv = clean_root.install([broken], f"sabotage-{sabotage}")
    try:
        audio = Path("/tmp") / f"sabotage-{os.getpid()}"
        venv.host_path(audio).mkdir(parents=True, exist_ok=True)
        r = venv.run([venv.bindir / "moshi-testapp", *(a.format(audio=audio) for a in app_check)], timeout=300)
        print(r.returncode, r.stdout, r.stderr[-2000:])
        assert r.returncode != 0 and "PASS" not in r.stdout
    finally:
        venv.remove()
        shutil.rmtree(venv.host_path(Path("/tmp") / f"sabotage-{os.getpid()}"), ignore_errors=True)


def test_check_reproducible_never_deletes_a_reproduce_folder_it_did_not_make(tmp_path):
    """Issue 24, item 5: OUT/reproduce with the user's files in it is refused and kept."""
    from builder.errors import ConfigurationError

    (tmp_path / "reproduce").mkdir()
    (tmp_path / "reproduce" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="was not made by --check-reproducible"):
        pipeline.check_reproducible({}, None, [], None, [tmp_path / "a.whl"])
    assert (tmp_path / "reproduce" / "notes.txt").read_text() == "mine"
    (tmp_path / "reproduce" / "notes.txt").unlink()
    (tmp_path / "reproduce").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "reproduce").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigurationError):
        pipeline.check_reproducible({}, None, [], None, [tmp_path / "a.whl"])
    assert (tmp_path / "elsewhere").is_dir()


def test_check_reproducible_deletes_only_what_its_marker_proves_it_wrote(tmp_path, monkeypatch):
    """Probe 24 F05c: OUT/reproduce holding the marker (copied by the user) and the user's files
    was deleted. Only files the marker lists, with their sha256, are deleted; else nothing."""
    import os
    from builder.errors import ConfigurationError

    rep = tmp_path / "reproduce"
    rep.mkdir()
    (rep / "my-notes.txt").write_text("the user's notes\n")
    (rep / "sub").mkdir()
    (rep / "sub" / "data.bin").write_bytes(os.urandom(1000))
    (rep / pipeline.REPRODUCE_MARKER).write_text("made by moshi-build --check-reproducible: (copied by the user)\n")
    with pytest.raises(ConfigurationError, match="does not say which files"):
        pipeline.check_reproducible({}, None, [], None, [tmp_path / "a.whl"])
    assert (rep / "my-notes.txt").is_file() and (rep / "sub" / "data.bin").is_file()

    # a marker written by a run: what the second build wrote, then the user's file beside it
    started = []

    def second_build(recipes, report, gpu_targets, environment, out, **kwargs):
        started.append(out)
        (out / "a.whl").write_bytes(b"second")
        (out / "logs").mkdir()
        (out / "logs" / "build.log").write_text("log\n")
        raise RuntimeError("stopped")
    monkeypatch.setattr(pipeline, "make_wheels", second_build)
    for p in (rep / "sub" / "data.bin", rep / "sub", rep / "my-notes.txt", rep / pipeline.REPRODUCE_MARKER):
        p.rmdir() if p.is_dir() else p.unlink()
    rep.rmdir()
    with pytest.raises(RuntimeError, match="stopped"):
        pipeline.check_reproducible({}, None, [], None, [tmp_path / "a.whl"])
    (rep / "logs" / "mine.txt").write_text("mine\n")
    with pytest.raises(ConfigurationError, match="did not write .the first: logs/mine.txt"):
        pipeline.check_reproducible({}, None, [], None, [tmp_path / "a.whl"])
    assert (rep / "a.whl").read_bytes() == b"second" and len(started) == 1
    (rep / "logs" / "mine.txt").unlink()
    (rep / "a.whl").write_bytes(b"changed")
    with pytest.raises(ConfigurationError, match="changed since"):
        pipeline.check_reproducible({}, None, [], None, [tmp_path / "a.whl"])
    (rep / "a.whl").write_bytes(b"second")      # as written: the next run replaces the folder
    with pytest.raises(RuntimeError, match="stopped"):
        pipeline.check_reproducible({}, None, [], None, [tmp_path / "a.whl"])
    assert len(started) == 2 and sorted(p.name for p in rep.iterdir()) == [pipeline.REPRODUCE_MARKER, "a.whl", "logs"]
