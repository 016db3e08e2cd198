"""The wheel: launcher (template code), metadata rendering, runtime rules, and build_wheel.

The launcher runs from wheels/src directly; the builder's helpers run on small
inputs. build_wheel runs end to end (staging, scikit-build-core, auditwheel
repair) on a tool and a library compiled here against a fake root filesystem
(tests/helpers/elf.py); the real wheels are built by the slow tier
(tests/test_pipeline.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from builder.package import rules
from builder.common import elfinfo
from builder.package import linkage
from builder.package import dpkg
from builder.package import project
from builder.package import staging
from builder.common import wheel_reader as reader
from builder.package import wheel
from builder.errors import BuildStepError, ConfigurationError, RecipeError
from tests.helpers.payload import LIBS_DIR, TOOL as TINY_TOOL, TOOL_OUTPUT as TINY_TOOL_OUTPUT
from tests.helpers.payload import make_tiny_inputs, runtime_spec

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "wheels"
TEMPLATE_SRC = TEMPLATE / "src"

sys.path.insert(0, str(TEMPLATE_SRC))
from moshi_rocm import _launcher  # noqa: E402  (the template's launcher, as shipped)

sys.path.remove(str(TEMPLATE_SRC))


# --------------------------------------------------------------------------- launcher

@pytest.mark.parametrize("name, expected", [
    ("HIP0", "ROCm0"), ("hip12", "ROCm12"), ("Hip3", "ROCm3"),
    ("ROCm0", "ROCm0"), ("CPU", "CPU"), ("HIP", "HIP"), ("HIPx", "HIPx"), ("xHIP0", "xHIP0"),
])
def test_alias_device(name, expected):
    assert _launcher.alias_device(name, [("HIP", "ROCm")]) == expected


@pytest.mark.parametrize("args, expected", [
    (["-d", "HIP1", "hello"], ["-d", "ROCm1", "hello"]),
    (["--device", "hip0", "-o", "x.wav"], ["--device", "ROCm0", "-o", "x.wav"]),
    (["say", "HIP0"], ["say", "HIP0"]),                  # not after a device flag: text, untouched
    (["-d"], ["-d"]),                                    # the tool reports the missing value itself
    (["-d", "-d", "HIP0"], ["-d", "-d", "HIP0"]),        # read like the tools: "-d" is the value
    (["-d", "ROCm0", "-d", "HIP2"], ["-d", "ROCm0", "-d", "ROCm2"]),
    (["--device=HIP0"], ["--device=HIP0"]),              # the tools have no = form
    ([], []),
])
def test_rewrite_device_args(args, expected):
    assert _launcher.rewrite_device_args(args, ["-d", "--device"], [("HIP", "ROCm")]) == expected


INFO = {
    "tools": ["fake-tool"], "entry_points": {"fake_tool": "fake-tool"}, "bin_dir": "bin",
    "library_dirs": ["bin", "../fake.libs"], "env": {"ROCBLAS_TENSILE_LIBPATH": "rocblas/library"},
    "launcher": {"device_flags": ["-d", "--device"], "device_aliases": [["HIP", "ROCm"]]},
    "version": "1.0.post0", "gpu_target": "gfx1100",
}


def test_environment_points_at_package_and_overrides(tmp_path):
    env = _launcher.tool_environment(INFO, {"ROCBLAS_TENSILE_LIBPATH": "/opt/rocm/lib/rocblas/library",
                                            "HOME": "/home/u"}, tmp_path)
    assert env["ROCBLAS_TENSILE_LIBPATH"] == str(tmp_path / "rocblas/library")
    assert env["HOME"] == "/home/u"
    assert "LD_LIBRARY_PATH" not in env   # RUNPATHs do the work; nothing added when unset


def test_environment_puts_package_libraries_first_when_ld_library_path_is_set(tmp_path):
    env = _launcher.tool_environment(INFO, {"LD_LIBRARY_PATH": "/opt/rocm/lib"}, tmp_path)
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert parts == [str(tmp_path / "bin"), os.path.normpath(str(tmp_path / "../fake.libs")), "/opt/rocm/lib"]


def _fake_package(tmp_path: Path, script: str, info: dict = INFO) -> Path:
    """A copy of the template package with a runtime file and one shell-script 'tool'."""
    pkg = tmp_path / "site" / "moshi_rocm"
    shutil.copytree(TEMPLATE_SRC / "moshi_rocm", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "_runtime.json").write_text(json.dumps(info))
    tool = pkg / info["bin_dir"] / info["tools"][0]
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    tool.chmod(0o755)
    return pkg


def test_prepare_uses_the_real_path_as_argv0(tmp_path):
    pkg = _fake_package(tmp_path, "exit 0\n")
    exe, argv, env = _launcher.prepare("fake-tool", ["-d", "HIP0", "x"], {"PATH": "/usr/bin"}, pkg)
    assert exe == pkg / "bin" / "fake-tool"
    assert argv == [str(exe), "-d", "ROCm0", "x"]   # tools find *-config.json next to argv[0]
    assert env["ROCBLAS_TENSILE_LIBPATH"] == str(pkg / "rocblas/library")


def test_prepare_rejects_unknown_and_broken_tools(tmp_path):
    pkg = _fake_package(tmp_path, "exit 0\n")
    with pytest.raises(_launcher.LauncherError, match="unknown tool 'other'.*fake-tool"):
        _launcher.prepare("other", [], {}, pkg)
    (pkg / "bin" / "fake-tool").chmod(0o644)
    with pytest.raises(_launcher.LauncherError, match="not executable"):
        _launcher.prepare("fake-tool", [], {}, pkg)
    (pkg / "_runtime.json").unlink()
    with pytest.raises(_launcher.LauncherError, match="reinstall"):
        _launcher.prepare("fake-tool", [], {}, pkg)


TOOL_SCRIPT = """\
echo "pid $$"
echo "args $*"
echo "argv0 $0"
echo "kernels $ROCBLAS_TENSILE_LIBPATH"
grep SigIgn /proc/$$/status
read line
echo "stdin $line"
echo "to stderr" >&2
exit 7
"""


def test_console_script_execs_the_tool(tmp_path):
    """Through the entry point, as pip's script does it: same process, args, streams, exit status."""
    pkg = _fake_package(tmp_path, TOOL_SCRIPT)
    code = "import sys; from moshi_rocm.tools import fake_tool; sys.exit(fake_tool())"
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}
    env.pop("LD_LIBRARY_PATH", None)
    proc = subprocess.Popen([sys.executable, "-c", code, "-d", "HIP1", "a b"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate("from stdin\n", timeout=30)
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line and not line.startswith("SigIgn"))
    assert proc.returncode == 7
    assert lines["pid"] == str(proc.pid)                       # exec, not a child process
    assert lines["args"] == "-d ROCm1 a b"
    assert lines["argv0"] == str(pkg / "bin" / "fake-tool")
    assert lines["kernels"] == str(pkg / "rocblas/library")
    assert lines["stdin"] == "from stdin"
    assert err == "to stderr\n"
    sigign = int(next(l for l in out.splitlines() if l.startswith("SigIgn")).split()[1], 16)
    assert not sigign & (1 << (signal.SIGPIPE - 1)), "SIGPIPE must be reset to default before exec"


def test_module_entry_and_errors(tmp_path):
    pkg = _fake_package(tmp_path, "echo ran $*\n")
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "moshi_rocm", *a], capture_output=True, text=True,
                                    env=env, timeout=30)
    assert run("--list").stdout.split() == ["fake-tool"]
    assert json.loads(run("--info").stdout)["gpu_target"] == "gfx1100"
    assert run("fake-tool", "-d", "hip0").stdout == "ran -d ROCm0\n"
    bad = run("nope")
    assert bad.returncode == 127 and "unknown tool 'nope'" in bad.stderr
    missing = subprocess.run([sys.executable, "-c", "from moshi_rocm.tools import nothing_here"],
                             capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode != 0 and "nothing_here" in missing.stderr


# --------------------------------------------------------------------------- metadata

@pytest.mark.parametrize("release, build, expected", [
    ("0.0.0+f1fabbd", 0, "0.0.0.post0"), ("1.2.3", 4, "1.2.3.post4"), ("2.0rc1", 1, "2.0rc1.post1"),
])
def test_wheel_version(release, build, expected):
    assert project.wheel_version(release, build) == expected


@pytest.mark.parametrize("release, build", [("1.2.3.post1", 1), ("not a version", 0), ("1.0", -1)])
def test_wheel_version_rejects(release, build):
    with pytest.raises(ConfigurationError):
        project.wheel_version(release, build)


def test_names():
    assert project.normalized_name("moshi-rocm-gfx1100") == "moshi_rocm_gfx1100"
    assert project.entry_points(["moshi-tts", "mimi-echo", "moshi-testapp"]) == {
        "moshi_tts": "moshi-tts", "mimi_echo": "mimi-echo", "moshi_testapp": "moshi-testapp"}
    assert project.entry_point_name("import") == "import_"
    assert project.entry_point_name("2x") == "_2x"
    with pytest.raises(ConfigurationError, match="same entry point"):
        project.entry_points(["a-b", "a_b"])
    assert wheel.grafted_name("libamdhip64.so.6.4.43484", "0123abcd") == "libamdhip64-0123abcd.so.6.4.43484"


def test_license_expression():
    expr = project.license_expression(["MIT", "LGPL-2.1-or-later", "MIT", "BSD-3-Clause OR GPL-2.0-only",
                                     "Apache-2.0 WITH LLVM-exception", "LicenseRef-Debian-libbsd0"])
    assert expr == ("MIT AND LGPL-2.1-or-later AND (BSD-3-Clause OR GPL-2.0-only) AND "
                    "Apache-2.0 WITH LLVM-exception AND LicenseRef-Debian-libbsd0")
    with pytest.raises(ConfigurationError, match="invalid SPDX"):
        project.license_expression(["MIT", "Not A License"])
    with pytest.raises(ConfigurationError):
        project.license_expression([])


def test_template_renders_a_valid_project():
    text = project.render_pyproject(
        (TEMPLATE / "pyproject.toml.in").read_text(), name="moshi-rocm-gfx1100", version="0.0.0.post3",
        summary='quotes " and \\ survive', license="MIT AND LGPL-2.1-or-later", keywords=["gfx1100"],
        packages=["src/moshi_rocm"], scripts={"moshi-tts": "moshi_rocm.tools:moshi_tts"})
    data = tomllib.loads(text)
    assert data["project"]["name"] == "moshi-rocm-gfx1100"
    assert data["project"]["description"] == 'quotes " and \\ survive'
    assert data["project"]["license"] == "MIT AND LGPL-2.1-or-later"
    assert data["project"]["license-files"] == ["LICENSES/**/*"]
    assert data["project"]["scripts"] == {"moshi-tts": "moshi_rocm.tools:moshi_tts"}
    assert data["project"]["dependencies"] == []
    skb = data["tool"]["scikit-build"]
    assert skb["wheel"]["py-api"] == "py3"
    assert skb["wheel"]["packages"] == ["src/moshi_rocm"]
    assert data["build-system"]["build-backend"] == "scikit_build_core.build"


def test_a_target_wheel_project_requires_its_base_and_has_no_package():
    text = project.render_pyproject(
        (TEMPLATE / "pyproject.toml.in").read_text(), name="moshi-rocm-gfx1100", version="1.0.post2",
        summary="s", license="MIT", keywords=[], packages=[], scripts={}, dependencies=["moshi-rocm==1.0.post2"])
    data = tomllib.loads(text)
    assert data["project"]["dependencies"] == ["moshi-rocm==1.0.post2"]
    assert data["project"].get("scripts", {}) == {}
    assert data["tool"]["scikit-build"]["wheel"]["packages"] == []


def test_template_cmake_only_installs():
    cmake = (TEMPLATE / "CMakeLists.txt").read_text()
    assert "LANGUAGES NONE" in cmake and "MOSHI_WHEEL_PAYLOAD" in cmake
    for word in ("add_executable", "add_library", "add_custom_command", "try_compile"):
        assert word not in cmake


def test_readme_names_target_and_components():
    text = project.render_readme(
        (TEMPLATE / "README.md.in").read_text(), distribution="moshi-rocm-gfx1100", gpu_target="gfx1100",
        gpus=["Radeon RX 7900 XTX"], package="moshi_rocm", bin_dir="bin", tools=["moshi-tts"],
        components=[project.Component("ffmpeg", "7.1.5", "LGPL-2.1-or-later")],
        system=[project.SystemPackage("librocblas4", "6.4.4-4", "MIT", Path("/x"), ("librocblas.so.4",))])
    assert "**gfx1100** target (Radeon RX 7900 XTX)" in text
    assert "| ffmpeg | 7.1.5 | LGPL-2.1-or-later |" in text
    assert "| librocblas4 | 6.4.4-4 | MIT |" in text
    assert "${" not in text


def test_component_coercion(tmp_path):
    lic = tmp_path / "LICENSE"
    c = project.Component.coerce(("ggml", "0.25.3", "MIT", [str(lic)]))
    assert c == project.Component("ggml", "0.25.3", "MIT", (lic,))
    assert project.Component.coerce({"name": "x", "version": "1", "license": "MIT"}).license_files == ()


# --------------------------------------------------------------------------- runtime rules

def test_runtime_spec_loads_and_is_consistent():
    spec = rules.load_runtime_spec()
    assert spec.distribution_for("gfx1030") == "moshi-rocm-gfx1030"
    assert spec.package == "moshi_rocm"
    comgr = next(r for r in spec.dlopen if r.soname == "libamd_comgr.so.3")
    assert comgr.bundle and comgr.needed_by == "libamdhip64.so.*"
    kernels = next(r for r in spec.data_dirs if r.env == "ROCBLAS_TENSILE_LIBPATH")
    assert kernels.select == "gpu_target"
    for _, expression in spec.debian_licenses:
        project.license_expression([expression])   # every one is valid SPDX
    # runtime.toml's [[dlopen]] is the only list: the spec has no way to add names from elsewhere
    assert not hasattr(spec, "with_dlopen")
    assert len({r.soname for r in spec.dlopen}) == len(spec.dlopen)


def test_dlopen_rules_round_trip_through_runtime_json():
    """build_wheel writes the rules into _runtime.json; verify reads them back."""
    spec = rules.load_runtime_spec()
    recorded = json.loads(json.dumps([r.to_json() for r in spec.dlopen]))
    assert recorded[0] == {"soname": "libamd_comgr.so.3", "needed_by": "libamdhip64.so.*", "bundle": True,
                           "reason": spec.dlopen[0].reason}
    assert tuple(rules.DlopenRule.from_json(r) for r in recorded) == spec.dlopen
    assert rules.DlopenRule.from_json({"soname": "libx.so.1"}) == rules.DlopenRule("libx.so.1")
    for bad in ({"needed_by": "lib*.so"}, {"soname": ""}, "libx.so.1", None):
        with pytest.raises(ValueError, match="not a dlopen rule"):
            rules.DlopenRule.from_json(bad)


def test_runtime_spec_rejects_bad_data():
    data = tomllib.loads((REPO / "builder/resources/runtime.toml").read_text())
    data["wheel"]["colour"] = "red"
    with pytest.raises(RecipeError, match="colour"):
        rules.parse_runtime_spec(data, "x.toml")
    data = tomllib.loads((REPO / "builder/resources/runtime.toml").read_text())
    data["wheel"]["distribution"] = "moshi-rocm"
    with pytest.raises(RecipeError, match="gpu_target"):
        rules.parse_runtime_spec(data, "x.toml")


def test_resolve_in_root_keeps_absolute_links_inside(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib/real").mkdir(parents=True)
    (root / "usr/lib/real/copyright").write_text("x")
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/pkg").symlink_to("/usr/lib/real")        # absolute, as seen inside the root
    (root / "lib").symlink_to("usr/lib")
    assert linkage.resolve_in_root(root, "/usr/share/doc/pkg/copyright") == root / "usr/lib/real/copyright"
    assert linkage.resolve_in_root(root, "/lib/real/../real/copyright") == root / "usr/lib/real/copyright"


def test_package_database(tmp_path):
    root = tmp_path
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "libfoo1:amd64.list").write_text("/.\n/usr\n/usr/lib/x86_64-linux-gnu/libfoo.so.1.2\n")
    (root / "var/lib/dpkg/status").write_text(
        "Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.2-3\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 9\n")
    doc = root / "usr/share/doc/libfoo1"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("MIT")
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    db = dpkg.PackageDatabase.for_root(root)
    # found through the merged-/usr alias too
    assert db.owner(root / "lib/x86_64-linux-gnu/libfoo.so.1.2") == "libfoo1"
    assert db.owner(root / "usr/lib/x86_64-linux-gnu/libbar.so") is None
    assert db.version("libfoo1") == "1.2-3" and db.version("gone") is None
    assert db.copyright("libfoo1") == doc / "copyright"
    assert dpkg.PackageDatabase.for_root(tmp_path / "nothing") is None


def test_find_data_dir(tmp_path):
    libdir = tmp_path / "usr/lib/x86_64-linux-gnu"
    (libdir / "rocblas/4.4.1/library").mkdir(parents=True)
    rule = rules.DataDirRule("kernels", "librocblas.so.*", ("rocblas/*/library", "rocblas/library"), "x")
    assert linkage.find_data_dir(rule, libdir / "librocblas.so.4") == libdir / "rocblas/4.4.1/library"
    (libdir / "rocblas/4.3.0/library").mkdir(parents=True)
    with pytest.raises(Exception, match="more than one version"):
        linkage.find_data_dir(rule, libdir / "librocblas.so.4")


# --------------------------------------------------------------------------- prefixes and ELF files

def _host_library_with_soname() -> Path | None:
    import ctypes.util

    name = ctypes.util.find_library("z")
    if not name:
        return None
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
        p = Path(d) / name
        if p.exists():
            return p.resolve()
    return None


def test_collect_sources_and_find_tools(tmp_path):
    lib = _host_library_with_soname()
    exe = Path(shutil.which("true") or "/bin/true").resolve()
    if lib is None or elfinfo.read_elf(exe) is None:
        pytest.skip("needs a host ELF executable and libz")
    app, core = tmp_path / "app", tmp_path / "core"
    (app / "bin").mkdir(parents=True)
    (core / "lib").mkdir(parents=True)
    shutil.copy(exe, app / "bin" / "my-tool")
    (app / "bin" / "my-config.json").write_text("{}")
    (app / "bin" / "notes.txt").write_text("not data")
    shutil.copy(lib, core / "lib" / lib.name)
    (core / "lib" / "libz.so").symlink_to(lib.name)               # dev symlink collapses
    soname = elfinfo.read_elf(lib).soname
    if soname != lib.name:
        (core / "lib" / soname).symlink_to(lib.name)
    spec = rules.load_runtime_spec()
    assert staging.find_tools(app) == ["my-tool"]
    tools, libs, data = staging._collect_sources({"app": app, "core": core}, ["my-tool"], spec)
    assert list(tools) == ["my-tool"]
    assert list(libs) == [soname] and libs[soname] == (core / "lib" / lib.name).resolve()
    assert list(data) == ["my-config.json"]
    with pytest.raises(BuildStepError, match="'missing-tool' is in none"):
        staging._collect_sources({"app": app}, ["missing-tool"], spec)


# --------------------------------------------------------------------------- build_wheel, end to end

@pytest.fixture(scope="module")
def tiny_wheel(tmp_path_factory):
    """build_wheel on tests/helpers/payload.py's inputs: staging, scikit-build-core, auditwheel repair (~2 s)."""
    if shutil.which("gcc") is None or shutil.which("strip") is None:
        pytest.skip("needs gcc and strip")
    d = tmp_path_factory.mktemp("tiny-wheel")
    tiny = make_tiny_inputs(d)
    lines: list[str] = []
    path = wheel.build_wheel(
        target="gfx1100", prefixes=tiny.prefixes, tools=[TINY_TOOL], runtime_root=tiny.root.path,
        components=[("tiny", "1.0", "MIT", [tiny.license])], out_dir=d / "wheelhouse", version="1.0",
        build_number=2, spec=runtime_spec(), build_info={"stack": "test"}, echo=lines.append)
    return path, tiny, lines


def test_build_wheel_makes_a_repaired_wheel_of_the_payload(tiny_wheel):
    path, tiny, lines = tiny_wheel
    dist = "tiny_rocm_gfx1100-1.0.post2"
    assert path.name.startswith(f"{dist}-py3-none-manylinux_") and path.name.endswith(".whl")
    assert path.with_name(f"{dist}.log").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]        # the work folder is gone
    report = reader.inspect_wheel(path)
    assert report.tags and all(t.startswith("py3-none-manylinux_") for t in report.tags), report.tags

    # auditwheel grafted the closure under names carrying their sha256, next to the dlopen'd plugin
    def grafted(real: Path) -> str:
        return wheel.grafted_name(real.name, hashlib.sha256(real.read_bytes()).hexdigest()[:8])

    libdir = tiny.root.libdir
    libs = {grafted(libdir / n) for n in ("libfoo.so.1.0.0", "libbar.so.2.0.0", "libqux.so.0.0.0")}
    template = {str(p.relative_to(TEMPLATE_SRC)) for p in (TEMPLATE_SRC / "moshi_rocm").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    licenses = {f"{dist}.dist-info/licenses/LICENSES/{f}" for f in (
        "tiny/LICENSE", "system/libbar2/copyright", "system/libfoo1/copyright", "system/libqux0/copyright")}
    assert set(report.files) == template | licenses | {f"{LIBS_DIR}/{n}" for n in libs} | {
        "moshi_rocm/_runtime.json", f"moshi_rocm/bin/{TINY_TOOL}", "moshi_rocm/bin/libtiny-core.so.1",
        "moshi_rocm/bin/tiny-config.json", "moshi_rocm/foo/data/common.dat", "moshi_rocm/foo/data/kern_gfx1100.dat",
        f"{LIBS_DIR}/libfoo-plugin.so.1",
        *(f"{dist}.dist-info/{f}" for f in ("METADATA", "WHEEL", "entry_points.txt", "RECORD",
                                             "sboms/moshi-build.cdx.json"))}
    assert report.modes[f"moshi_rocm/bin/{TINY_TOOL}"] & 0o111
    tool = report.elf[f"moshi_rocm/bin/{TINY_TOOL}"]
    assert tool.runpath == ("$ORIGIN", f"$ORIGIN/../../{LIBS_DIR}")
    assert set(tool.needed) >= {"libtiny-core.so.1", grafted(libdir / "libfoo.so.1.0.0")}
    for member, facts in report.elf.items():
        assert all(r.startswith("$ORIGIN") for r in facts.runpath), (member, facts.runpath)
        assert not facts.debug, member

    zf = zipfile.ZipFile(path)
    info = json.loads(zf.read("moshi_rocm/_runtime.json"))
    assert {k: info[k] for k in ("distribution", "version", "gpu_target", "package", "tools", "entry_points",
                                 "bin_dir", "library_dirs", "env", "components", "build")} == {
        "distribution": "tiny-rocm-gfx1100", "version": "1.0.post2", "gpu_target": "gfx1100",
        "package": "moshi_rocm", "tools": [TINY_TOOL], "entry_points": {"tiny_tool": TINY_TOOL}, "bin_dir": "bin",
        "library_dirs": ["bin", f"../{LIBS_DIR}"], "env": {"FOO_DATA": "foo/data"},
        "components": [{"name": "tiny", "version": "1.0", "license": "MIT"}], "build": {"stack": "test"}}
    assert [(p["package"], p["license"], p["libraries"]) for p in info["system_packages"]] == [
        ("libbar2", "LicenseRef-Debian-libbar2", ["libbar.so.2"]),
        ("libfoo1", "MIT", ["libfoo-plugin.so.1", "libfoo.so.1"]),
        ("libqux0", "BSD-3-Clause", ["libqux.so.0"])]
    assert [r["soname"] for r in info["dlopen"]] == ["libfoo-plugin.so.1", "libnever.so.1"]
    meta = zf.read(f"{dist}.dist-info/METADATA").decode()
    assert "Name: tiny-rocm-gfx1100\n" in meta and "Version: 1.0.post2\n" in meta
    expression = next(l for l in meta.splitlines() if l.startswith("License-Expression: "))
    assert set(expression.split(": ", 1)[1].split(" AND ")) == {"MIT", "BSD-3-Clause", "LicenseRef-Debian-libbar2"}
    assert "tiny-tool = moshi_rocm.tools:tiny_tool" in zf.read(f"{dist}.dist-info/entry_points.txt").decode()
    assert zf.read(f"{dist}.dist-info/licenses/LICENSES/system/libfoo1/copyright").decode().startswith("Copyright: foo")
    assert any("no SPDX license known for libbar2" in l for l in lines)


def test_the_tool_runs_from_the_unpacked_wheel_alone(tiny_wheel, tmp_path):
    """Grafted libraries, our library and the dlopen'd plugin all load from the wheel: the
    step prefix and the runtime root are moved away first."""
    path, tiny, _ = tiny_wheel
    site = tmp_path / "site"
    with zipfile.ZipFile(path) as zf:
        for member in zf.infolist():
            zf.extract(member, site)
            if member.external_attr >> 16 & 0o111:
                (site / member.filename).chmod(0o755)
    hidden = [p.rename(p.with_name(p.name + "-hidden")) for p in (tiny.prefix, tiny.root.path)]
    try:
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        r = subprocess.run([site / "moshi_rocm" / "bin" / TINY_TOOL], capture_output=True, text=True, env=env,
                           timeout=30)
    finally:
        for p, original in zip(hidden, (tiny.prefix, tiny.root.path)):
            p.rename(original)
    assert (r.returncode, r.stdout, r.stderr) == (0, TINY_TOOL_OUTPUT, "")


def test_source_date_epoch_comes_from_the_pinned_date_unless_given():
    from builder.package.timestamps import ZIP_EPOCH, source_date_epoch
    from builder.errors import ConfigurationError

    assert source_date_epoch({"date": "2026-02-18"}, environ={}) == 1771372800   # 2026-02-18T00:00:00Z
    assert source_date_epoch({"date": "2026-02-18"}, environ={"SOURCE_DATE_EPOCH": "1700000000"}) == 1700000000
    assert source_date_epoch({}, environ={}) == ZIP_EPOCH                      # zip cannot go below 1980
    assert source_date_epoch({"date": "1970-01-02"}, environ={}) == ZIP_EPOCH
    with pytest.raises(ConfigurationError, match="SOURCE_DATE_EPOCH='yesterday'"):
        source_date_epoch({}, environ={"SOURCE_DATE_EPOCH": "yesterday"})
    # hostile values: a digit str.isdigit() accepts but int() does not, past the zip's last time, huge
    for value in ("\u00b2", "1e20", "4354819200", "9" * 400):
        with pytest.raises(ConfigurationError, match="SOURCE_DATE_EPOCH="):
            source_date_epoch({}, environ={"SOURCE_DATE_EPOCH": value})


def sbom_of(path: Path) -> tuple[dict, "verify.CheckResult"]:
    """The wheel's SBOM and verify's sbom check on it (the other checks need a real ROCm wheel)."""
    import types
    from builder.check import verify
    from builder.check.checks.sbom import check_sbom
    from builder.package import sbom

    contents = verify.read_wheel(path, [])
    (member,) = [m for m in contents.files if m.endswith(".dist-info/sboms/moshi-build.cdx.json")]
    text = contents.texts[member]
    assert sbom.validate(text) == []
    return json.loads(text), check_sbom(types.SimpleNamespace(contents=contents))


def test_the_wheel_carries_its_sbom(tiny_wheel):
    path, tiny, _ = tiny_wheel
    doc, result = sbom_of(path)
    assert result.ok, result.line
    assert doc["metadata"]["component"]["purl"] == "pkg:pypi/tiny-rocm-gfx1100@1.0.post2"
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    assert set(by_ref) == {"component:tiny", "deb:libbar2", "deb:libfoo1", "deb:libqux0", "generated:launcher",
                           "generated:records"}
    where = lambda ref: {o["location"] for o in by_ref[ref]["evidence"]["occurrences"]}
    assert where("component:tiny") == {f"moshi_rocm/bin/{TINY_TOOL}", "moshi_rocm/bin/libtiny-core.so.1",
                                       "moshi_rocm/bin/tiny-config.json"}
    # libfoo1: the grafted library (auditwheel's name), the dlopen'd plugin and the data folder's files
    grafted = wheel.grafted_name("libfoo.so.1.0.0", hashlib.sha256(
        (tiny.root.libdir / "libfoo.so.1.0.0").read_bytes()).hexdigest()[:8])
    assert where("deb:libfoo1") == {f"{LIBS_DIR}/{grafted}", f"{LIBS_DIR}/libfoo-plugin.so.1",
                                    "moshi_rocm/foo/data/common.dat", "moshi_rocm/foo/data/kern_gfx1100.dat"}
    assert by_ref["deb:libfoo1"]["purl"].startswith("pkg:deb/debian/libfoo1@2.0-3?arch=")
    assert where("generated:records") == {"moshi_rocm/_runtime.json"}
    assert "moshi_rocm/__init__.py" in where("generated:launcher")
    text = json.dumps(doc)
    assert str(tiny.root.path) not in text and str(tiny.prefix) not in text


def test_a_build_number_past_nine_digits_is_refused_where_the_version_is_made():
    from builder.errors import ConfigurationError
    from builder.package.project import wheel_version

    assert wheel_version("1.0", 999_999_999) == "1.0.post999999999"
    for bad in (-1, 10 ** 9, 10 ** 5000):
        with pytest.raises(ConfigurationError, match="build number must be from 0 to 999999999"):
            wheel_version("1.0", bad)
