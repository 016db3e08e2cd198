"""moshi-build verify: a good wheel passes, each kind of sabotage fails with a clear line.

The wheels here are small but real: ELF files compiled with the host's gcc
(executables and libraries linked the way auditwheel leaves them: grafted
names, $ORIGIN RPATHs), .hip_fatbin sections holding clang offload bundles in
the real format (tests/helpers/offload.py's writer), a rocBLAS kernel folder,
licenses and METADATA, packed with zipfile under a manylinux tag.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from builder.check import code_selection
from builder.rocm import offload
from builder import pipeline
from builder.check import verify
from builder.errors import WheelVerificationError
from builder.rocm.offload import compress_bundle
from builder.rocm.targets import elf_machs
from tests.helpers.elf import gcc   # RPATH $ORIGIN unless told otherwise, as auditwheel leaves them
from tests.helpers.offload import bundle

ARCH = platform.machine()
GLIBC = platform.libc_ver()[1]
TARGET = "gfx1100"
PKG = "moshi_rocm"
LIBS = "moshi_rocm_gfx1100.libs"
DIST_INFO = "moshi_rocm_gfx1100-1.0.post0.dist-info"
# Every executable linked against glibc >= 2.34 calls __libc_start_main@GLIBC_2.34,
# and nothing here needs more: the tag auditwheel would give is manylinux_2_34.
TAG = f"manylinux_2_34_{ARCH}"
HIPV4 = "hipv4-amdgcn-amd-amdhsa--"

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not GLIBC or tuple(map(int, GLIBC.split(".")[:2])) < (2, 34),
    reason="needs gcc and glibc >= 2.34 on the host")


# --------------------------------------------------------------------------- real ELF files

def code_object(target: str, size: int = 64) -> bytes:
    """An ELF64 header whose e_flags name `target` (EF_AMDGPU_MACH), padded to `size`."""
    head = bytearray(b"\x7fELF\x02\x01\x01" + bytes(57))
    head[48:52] = (elf_machs()[target] | 0x300).to_bytes(4, "little")   # xnack/sramecc bits set: ignored
    return bytes(head) + bytes([len(target)]) * (size - 64)


def fatbin_source(targets: dict[str, int], compress: bool = False) -> str:
    """C source of a .hip_fatbin section: one offload bundle with a host entry and one code object per target."""
    entries = {"host-x86_64-unknown-linux-gnu-": b""}
    for target, size in targets.items():
        entries[HIPV4 + target] = code_object(target, size)
    data = compress_bundle(bundle(entries), 3, 1) if compress else bundle(entries)
    return ('__attribute__((section(".hip_fatbin"), used, aligned(4096))) '
            f"static const unsigned char fatbin[{len(data)}] = {{{', '.join(map(str, data))}}};\n")


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    """Every ELF file of the wheel, and the sabotaged variants, compiled once."""
    d = tmp_path_factory.mktemp("elf")
    f = {}
    f["hip"] = gcc(d / "libamdhip64-1a2b3c4d.so.6", "int hipInit(int f) { return f; }\n")
    f["comgr"] = gcc(d / "libamd_comgr.so.3", "int amd_comgr_get_version(void) { return 3; }\n")
    rocblas_src = "int hipInit(int); int rocblas_create_handle(void) { return hipInit(0); }\n"
    f["rocblas"] = gcc(d / "librocblas-5e6f7a8b.so.4", fatbin_source({"gfx1100": 96}, compress=True) + rocblas_src,
                       libs=(f["hip"],))
    # rocBLAS as Debian ships it (two targets), and with the target's entry dropped
    f["rocblas-untrimmed"] = gcc(d / "untrimmed" / "librocblas-5e6f7a8b.so.4",
                                 fatbin_source({"gfx1030": 64, "gfx1100": 96}, compress=True) + rocblas_src,
                                 libs=(f["hip"],))
    f["rocblas-no-target"] = gcc(d / "no-target" / "librocblas-5e6f7a8b.so.4",
                                 fatbin_source({}, compress=True) + rocblas_src, libs=(f["hip"],))
    core = "int demo_core(void) { return 42; }\n"
    f["core"] = gcc(d / "libdemo-core.so", core)
    hip_src = "int demo_core(void); int rocblas_create_handle(void);\n" \
              "int ggml_backend_init(void) { return demo_core() + rocblas_create_handle(); }\n"
    hip_libs = (f["core"], f["rocblas"], f["hip"])
    hip_rpath = f"$ORIGIN:$ORIGIN/../../{LIBS}"
    f["ggml-hip"] = gcc(d / "libggml-hip.so", fatbin_source({"gfx1100": 128}) + hip_src, libs=hip_libs,
                        rpath=hip_rpath)
    f["cpu"] = gcc(d / "libggml-cpu-haswell.so", "int ggml_backend_cpu_init(void) { return 1; }\n")
    f["tool"] = gcc(d / "moshi-demo", '#include <stdio.h>\nint demo_core(void);\n'
                    'int main(void) { printf("%d\\n", demo_core()); return 0; }\n', shared=False, libs=(f["core"],))
    # Sabotaged variants
    f["ggml-hip-gfx1030"] = gcc(d / "gfx1030" / "libggml-hip.so", fatbin_source({"gfx1030": 128}) + hip_src,
                                libs=hip_libs, rpath=hip_rpath)
    f["core-abs-rpath"] = gcc(d / "abs" / "libdemo-core.so", core, rpath="$ORIGIN:/opt/rocm/lib")
    # A source compiled where moshi-build keeps sources: __FILE__ lands in the binary, as in ggml's asserts.
    cached_src = d / "home" / ".cache" / "moshi-build" / "sources" / "demo-0123" / "src" / "core.c"
    f["core-build-path"] = gcc(d / "paths" / "libdemo-core.so",
                               core + 'const char *demo_where(void) { return __FILE__; }\n', src_path=cached_src)
    return f


# --------------------------------------------------------------------------- the wheel

def runtime_json() -> dict:
    return {
        "distribution": "moshi-rocm-gfx1100", "version": "1.0.post0", "gpu_target": TARGET, "package": PKG,
        "tools": ["moshi-demo"], "entry_points": {"moshi_demo": "moshi-demo"}, "bin_dir": "bin",
        "library_dirs": ["bin", f"../{LIBS}"], "env": {"ROCBLAS_TENSILE_LIBPATH": "rocblas/library"},
        "components": [{"name": "demo", "version": "1.0", "license": "MIT"}],
        "system_packages": [
            {"package": "libamdhip64-6", "version": "6.4.3-5", "license": "MIT", "libraries": ["libamdhip64.so.6"]},
            {"package": "librocblas4", "version": "6.4.4-4", "license": "MIT", "libraries": ["librocblas.so.4"]},
            {"package": "libamd-comgr3", "version": "7.0.2", "license": "NCSA", "libraries": ["libamd_comgr.so.3"]},
        ],
    }


LICENSES = ("LICENSES/demo/LICENSE", "LICENSES/system/libamdhip64-6/copyright",
            "LICENSES/system/librocblas4/copyright", "LICENSES/system/libamd-comgr3/copyright")


def members(elf: dict) -> dict[str, bytes | Path]:
    """The good wheel: member name -> content (bytes) or file to copy."""
    m: dict[str, bytes | Path] = {
        f"{PKG}/__init__.py": b"",
        f"{PKG}/_runtime.json": json.dumps(runtime_json(), indent=2).encode(),
        f"{PKG}/bin/moshi-demo": elf["tool"],
        f"{PKG}/bin/libdemo-core.so": elf["core"],
        f"{PKG}/bin/libggml-hip.so": elf["ggml-hip"],
        f"{PKG}/bin/libggml-cpu-haswell.so": elf["cpu"],
        f"{PKG}/bin/demo-config.json": b'{"model": "demo"}\n',
        f"{LIBS}/libamdhip64-1a2b3c4d.so.6": elf["hip"],
        f"{LIBS}/librocblas-5e6f7a8b.so.4": elf["rocblas"],
        f"{LIBS}/libamd_comgr.so.3": elf["comgr"],
        f"{PKG}/rocblas/library/TensileLibrary_Type_HH_Contraction_gfx1100.dat": b"kernels for gfx1100",
        f"{PKG}/rocblas/library/Kernels.so-000-gfx1100.hsaco": code_object("gfx1100", 80),
        f"{PKG}/rocblas/library/TensileLibrary_Type_HH_Contraction_gfx1100.co": compress_bundle(
            bundle({"host-x86_64-unknown-linux-gnu-": b"", HIPV4 + "gfx1100": code_object("gfx1100", 96)}), 3, 1),
        f"{PKG}/rocblas/library/TensileLibrary_Type_HH_Contraction_fallback.dat": b"any target",
        f"{DIST_INFO}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                              f"Tag: py3-none-{TAG}\n".encode(),
        f"{DIST_INFO}/METADATA": ("Metadata-Version: 2.4\nName: moshi-rocm-gfx1100\nVersion: 1.0.post0\n"
                                  "License-Expression: MIT AND NCSA\n"
                                  + "".join(f"License-File: {l}\n" for l in LICENSES)).encode(),
    }
    for lic in LICENSES:
        m[f"{DIST_INFO}/licenses/{lic}"] = f"license text of {lic}\n".encode()
    return m


def pack(directory: Path, content: dict[str, bytes | Path], tag: str = TAG) -> Path:
    path = directory / f"moshi_rocm_gfx1100-1.0.post0-py3-none-{tag}.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        names = list(content) + [f"{DIST_INFO}/RECORD"]
        for name in names:
            data = content.get(name, "".join(f"{n},,\n" for n in names).encode())
            if isinstance(data, Path):
                data = data.read_bytes()
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if data[:4] == b"\x7fELF" else 0o644) << 16
            zf.writestr(info, data)
    return path


def offload_reader_probe(manifest_argv: list[str]):
    """Stands in for the wheel's comgr in these fast tests (their comgr is a gcc-built dummy):
    answers each question from builder/rocm/offload.py's reading of the bundle. The slow tier asks
    the real libamd_comgr of a real wheel (tests/test_pipeline.py)."""
    _, _, manifest_path, result_path = manifest_argv
    manifest = json.loads(Path(manifest_path).read_text())
    results = []
    for entry in manifest["bundles"]:
        (b,) = list(offload.iter_bundles(Path(entry["path"]).read_bytes()))
        answers = {}
        for isa in entry["isas"]:
            co = b.code_object(isa) or b""
            answers[isa] = {"size": len(co), "e_flags": int.from_bytes(co[48:52], "little") if co else None}
        results.append({"path": entry["path"], "answers": answers})
    Path(result_path).write_text(json.dumps({"results": results}))
    return subprocess.CompletedProcess(manifest_argv, 0, "", "")


def fake_probe_root() -> code_selection.ProbeRoot:
    return code_selection.ProbeRoot(Path("/"), offload_reader_probe)


def check(tmp_path: Path, content: dict, tag: str = TAG, **kwargs) -> dict[str, verify.CheckResult]:
    kwargs.setdefault("probe_root", fake_probe_root())
    kwargs.setdefault("build_paths", [tmp_path / "build-cache"])
    report = verify.verify_wheel(pack(tmp_path / "wheelhouse", content, tag), **kwargs)
    print("\n".join(report.lines()))
    return {c.name: c for c in report.checks}


def failing(results: dict[str, verify.CheckResult]) -> dict[str, str]:
    return {name: c.line for name, c in results.items() if not c.ok}


# --------------------------------------------------------------------------- tests

def test_good_wheel_passes_every_check(tmp_path, elf):
    results = check(tmp_path, members(elf))
    assert list(results) == ["runtime-info", "elf-closure", "rpath", "backends", "gpu-code", "kernels",
                             "code-selection", "standins", "build-paths", "licenses", "manylinux"]
    assert failing(results) == {}
    assert results["gpu-code"].line == ("PASS gpu-code: libggml-hip.so 0.0 MB for gfx1100 in 1 bundle; "
                                        "librocblas-5e6f7a8b.so.4 0.0 MB for gfx1100 in 1 bundle")
    assert results["code-selection"].line == (
        "PASS code-selection: the wheel's comgr gives a gfx1100 code object for each of 4 bundles and "
        "code-object files (4 files) and nothing for 13 other targets")
    assert results["standins"].line == "PASS standins: the wheel carries no generated stand-in"
    assert results["kernels"].line == ("PASS kernels: moshi_rocm/rocblas/library/: 3 gfx1100 files, "
                                       "1 for any target")
    assert results["elf-closure"].line.endswith(f"allow-list; dlopen'd: libamd_comgr.so.3")
    assert results["manylinux"].line.startswith(f"PASS manylinux: {TAG} matches the newest symbol versions: GLIBC_2.34")


def test_removed_library(tmp_path, elf):
    content = members(elf)
    del content[f"{PKG}/bin/libdemo-core.so"]
    assert failing(check(tmp_path, content)) == {"elf-closure": (
        f"FAIL elf-closure: {PKG}/bin/libggml-hip.so needs libdemo-core.so: not in the wheel and not on the "
        f"{TAG} allow-list; {PKG}/bin/moshi-demo needs libdemo-core.so: not in the wheel and not on the {TAG} "
        "allow-list")}


def test_removed_dlopen_library(tmp_path, elf):
    content = members(elf)
    del content[f"{LIBS}/libamd_comgr.so.3"]
    del content[f"{DIST_INFO}/licenses/LICENSES/system/libamd-comgr3/copyright"]
    results = check(tmp_path, content)
    assert results["elf-closure"].line == (
        "FAIL elf-closure: libamd_comgr.so.3 (opened with dlopen by libamdhip64-1a2b3c4d.so.6: the HIP runtime loads "
        "the code object manager (and with it libLLVM) at start-up) is not in its RPATH folders "
        f"({LIBS})")
    assert not results["licenses"].ok   # the runtime file still names comgr's package


def with_runtime(content: dict, **changes) -> dict:
    """The wheel with its _runtime.json changed (a key set to None is dropped)."""
    info = runtime_json()
    info.update(changes)
    content[f"{PKG}/_runtime.json"] = json.dumps({k: v for k, v in info.items() if v is not None}).encode()
    return content


COMGR_RULE = {"soname": "libamd_comgr.so.3", "needed_by": "libamdhip64.so.*", "bundle": True,
              "reason": "the HIP runtime loads the code object manager"}


def test_dlopen_rules_come_from_the_wheels_runtime_json(tmp_path, elf):
    """The wheel records runtime.toml's [[dlopen]] rules it was made with; verify applies those."""
    results = check(tmp_path / "recorded", with_runtime(members(elf), dlopen=[COMGR_RULE]))
    assert failing(results) == {}
    assert results["elf-closure"].line.endswith("dlopen'd: libamd_comgr.so.3")
    # A rule the wheel recorded (and this runtime.toml does not have) is checked: always bundled without needed_by.
    extra = {"soname": "libextra.so.1", "needed_by": None, "bundle": True, "reason": "opened by the tools"}
    results = check(tmp_path / "extra", with_runtime(members(elf), dlopen=[COMGR_RULE, extra]))
    assert failing(results) == {"elf-closure": "FAIL elf-closure: libextra.so.1 (opened with dlopen: opened by "
                                               "the tools) is not in the wheel"}
    # A wheel whose record names no dlopen'd library is not held to this runtime.toml's.
    content = with_runtime(members(elf), dlopen=[])
    del content[f"{LIBS}/libamd_comgr.so.3"]
    results = check(tmp_path / "none", content)
    assert results["elf-closure"].ok and results["elf-closure"].line.endswith("dlopen'd: none")


def test_a_wheel_made_before_the_record_falls_back_to_runtime_toml(tmp_path, elf):
    """Older wheels' _runtime.json has no "dlopen": the rules of this runtime.toml apply (see test_removed_dlopen_library)."""
    assert "dlopen" not in runtime_json()
    content = with_runtime(members(elf), dlopen="libamd_comgr.so.3")   # not a list of rules
    results = check(tmp_path, content)
    assert failing(results) == {"elf-closure": "FAIL elf-closure: _runtime.json's dlopen is unreadable (not a list: "
                                               "'libamd_comgr.so.3'); runtime.toml's rules were used"}


def test_verify_takes_no_dlopen_list():
    import inspect

    assert "dlopen" not in inspect.signature(verify.verify_wheel).parameters
    assert "dlopen" not in inspect.signature(pipeline.verify_built_wheel).parameters


def test_library_outside_the_rpath(tmp_path, elf):
    content = members(elf)
    content[f"{PKG}/libdemo-core.so"] = content.pop(f"{PKG}/bin/libdemo-core.so")
    line = check(tmp_path, content)["elf-closure"].line
    assert line.startswith(f"FAIL elf-closure: {PKG}/bin/libggml-hip.so needs libdemo-core.so: it is at "
                           f"{PKG}/libdemo-core.so, which its RPATH ($ORIGIN:$ORIGIN/../../{LIBS}) does not search")


def test_cpu_backends_left_out(tmp_path, elf):
    """ggml finds its backends by scanning the tool's directory: no DT_NEEDED shows they are missing."""
    content = members(elf)
    del content[f"{PKG}/bin/libggml-cpu-haswell.so"]
    results = check(tmp_path, content)
    assert failing(results) == {"backends": (
        f"FAIL backends: {PKG}/bin/ has 0 libggml-cpu-*.so (at least 1 needed: the CPU backend (one library per "
        "CPU variant)); the tools would start without it")}


def test_absolute_rpath(tmp_path, elf):
    content = members(elf)
    content[f"{PKG}/bin/libdemo-core.so"] = elf["core-abs-rpath"]
    assert failing(check(tmp_path, content)) == {"rpath": (
        f"FAIL rpath: {PKG}/bin/libdemo-core.so: RPATH entries not relative to $ORIGIN inside the wheel: "
        "/opt/rocm/lib")}


def test_other_targets_kernel_file(tmp_path, elf):
    content = members(elf)
    content[f"{PKG}/rocblas/library/TensileLibrary_Type_HH_Contraction_gfx1030.dat"] = b"kernels for gfx1030"
    assert failing(check(tmp_path, content)) == {"kernels": (
        f"FAIL kernels: rocBLAS Tensile kernels: {PKG}/rocblas/library/ holds 1 file of other targets (gfx1030), "
        "e.g. TensileLibrary_Type_HH_Contraction_gfx1030.dat")}


def test_kernel_folder_without_the_target(tmp_path, elf):
    content = {k: v for k, v in members(elf).items() if "gfx1100" not in k.rsplit("/", 1)[-1] or "library" not in k}
    assert failing(check(tmp_path, content)) == {"kernels": (
        f"FAIL kernels: rocBLAS Tensile kernels: {PKG}/rocblas/library/ holds no file for gfx1100")}


def test_build_path_left_in_a_file(tmp_path, elf):
    content = members(elf)
    content[f"{PKG}/bin/libdemo-core.so"] = elf["core-build-path"]
    line = failing(check(tmp_path, content))["build-paths"]
    assert line == (f"FAIL build-paths: paths of the build machine in 1 file: {PKG}/bin/libdemo-core.so "
                    f"mentions 1 build path, e.g. {elf['core'].parent}/home/.cache/moshi-build/sources/demo-0123/src/core.c")


def test_build_directory_named_by_the_caller(tmp_path, elf):
    content = members(elf)
    cache = tmp_path / "build-cache"
    content[f"{PKG}/bin/demo-config.json"] = json.dumps({"model": f"{cache}/builds/demo-1/model.bin"}).encode()
    results = check(tmp_path, content)
    assert failing(results) == {"build-paths": (
        f"FAIL build-paths: paths of the build machine in 1 file: {PKG}/bin/demo-config.json mentions "
        f"1 build path, e.g. {cache}/builds/demo-1/model.bin")}
    # A directory too generic to search for is named on the line, not searched.
    results = check(tmp_path, members(elf), build_paths=["/build", cache])
    assert results["build-paths"].line == (f"PASS build-paths: no file mentions /.cache/moshi-build/, {cache} "
                                           "(/build too generic, not searched)")


def test_code_object_of_another_target(tmp_path, elf):
    content = members(elf)
    content[f"{PKG}/bin/libggml-hip.so"] = elf["ggml-hip-gfx1030"]
    assert failing(check(tmp_path, content)) == {
        "gpu-code": "FAIL gpu-code: libggml-hip.so carries code objects for gfx1030, none for gfx1100",
        "code-selection": "FAIL code-selection: libggml-hip.so bundle 0: comgr finds no gfx1100 code object; "
                          "libggml-hip.so bundle 0: comgr also finds a gfx1030 code object (128 bytes)"}


def test_missing_license(tmp_path, elf):
    content = members(elf)
    del content[f"{DIST_INFO}/licenses/LICENSES/system/librocblas4/copyright"]
    assert failing(check(tmp_path, content)) == {"licenses": (
        f"FAIL licenses: METADATA lists License-File LICENSES/system/librocblas4/copyright, which is not in "
        f"{DIST_INFO}/licenses/; system package librocblas4: {DIST_INFO}/licenses/LICENSES/system/librocblas4/"
        "copyright is missing")}


def test_grafted_library_no_package_accounts_for(tmp_path, elf):
    content = members(elf)
    content[f"{LIBS}/libmystery-0badc0de.so.1"] = elf["hip"]
    assert failing(check(tmp_path, content)) == {"licenses": (
        "FAIL licenses: libmystery-0badc0de.so.1 is bundled but no system package of moshi_rocm/_runtime.json "
        "lists it, so its license is unknown")}


@pytest.mark.parametrize("tag, reason", [
    (f"manylinux_2_17_{ARCH}", f"manylinux_2_17_{ARCH} does not provide GLIBC_2.34 (needed from libc.so.6)"),
    (f"manylinux_2_39_{ARCH}", f"tagged manylinux_2_39_{ARCH}, but the newest symbol versions (GLIBC_2.34) and the "
                               f"system libraries it needs fit {TAG}"),
    (f"linux_{ARCH}", f"no manylinux platform tag (linux_{ARCH})"),
])
def test_tag_inconsistent_with_symbol_versions(tmp_path, elf, tag, reason):
    results = check(tmp_path, members(elf), tag)
    assert results["manylinux"].line == f"FAIL manylinux: {reason}"


def run_cli(argv: list[str]) -> int:
    from builder.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return e.code or 0
    return 0


@pytest.fixture
def offload_reader_for_comgr(monkeypatch):
    """The CLI and the pipeline make their own probe root: give them the stand-in reader."""
    monkeypatch.setattr(code_selection, "default_probe_root", lambda *a, **k: fake_probe_root())


def test_cli_lines_json_and_exit_codes(tmp_path, elf, capsys, offload_reader_for_comgr):
    good = pack(tmp_path / "good", members(elf))
    content = members(elf)
    content[f"{PKG}/bin/libggml-hip.so"] = elf["ggml-hip-gfx1030"]
    bad = pack(tmp_path / "bad", content)
    assert run_cli(["verify", str(good)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(good.name + " (gfx1100, ")
    assert [l.split(":")[0] for l in out[1:]] == [f"  PASS {c}" for c in ("runtime-info", "elf-closure", "rpath",
                                                  "backends", "gpu-code", "kernels", "code-selection", "standins", "build-paths",
                                                  "licenses", "manylinux")]
    assert run_cli(["verify", "--json", str(good), str(bad)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [w["ok"] for w in doc["wheels"]] == [True, False]
    failed = [c for c in doc["wheels"][1]["checks"] if not c["ok"]]
    assert [c["check"] for c in failed] == ["gpu-code", "code-selection"]
    assert failed[0]["problems"] == ["libggml-hip.so carries code objects for gfx1030, none for gfx1100"]


def test_pipeline_rejects_a_failing_wheel(tmp_path, elf, offload_reader_for_comgr):
    """What make_wheels() runs after each build_wheel(): a failing wheel ends the run, moved aside."""
    content = members(elf)
    content[f"{PKG}/bin/libdemo-core.so"] = elf["core-build-path"]
    path = pack(tmp_path / "wheelhouse", content)
    report = pipeline.BuildReport(trees=[], results=[], seconds=0.0)
    lines = []
    with pytest.raises(WheelVerificationError, match=r"fails verification \(build-paths: paths of the build "
                                                     r"machine in 1 file: .*rejected") as e:
        pipeline.verify_built_wheel(path, report, Path("/"), tmp_path / "envs", echo=lines.append)
    assert e.value.return_code == 13
    assert not path.exists() and (path.parent / "rejected" / path.name).exists()
    assert any(l.startswith("  FAIL build-paths:") for l in lines)
    good = pack(tmp_path / "wheelhouse", members(elf))
    pipeline.verify_built_wheel(good, report, Path("/"), tmp_path / "envs", echo=lines.append)
    assert good.exists()


# --------------------------------------------------------------------------- code selection

def test_a_fat_binary_with_other_targets_fails_code_selection(tmp_path, elf):
    content = members(elf)
    content[f"{LIBS}/librocblas-5e6f7a8b.so.4"] = elf["rocblas-untrimmed"]
    assert failing(check(tmp_path, content)) == {"code-selection": (
        "FAIL code-selection: librocblas-5e6f7a8b.so.4 bundle 0: comgr also finds a gfx1030 code object "
        "(64 bytes)")}


def test_a_bundle_without_the_targets_entry_fails(tmp_path, elf):
    content = members(elf)
    content[f"{LIBS}/librocblas-5e6f7a8b.so.4"] = elf["rocblas-no-target"]
    failed = failing(check(tmp_path, content))
    assert failed["code-selection"] == ("FAIL code-selection: librocblas-5e6f7a8b.so.4 bundle 0: comgr finds "
                                        "no gfx1100 code object")


def test_a_code_object_file_of_the_wrong_kind_fails(tmp_path, elf):
    content = members(elf)
    content[f"{PKG}/rocblas/library/Kernels.so-000-gfx1100.hsaco"] = code_object("gfx1101", 80)
    assert failing(check(tmp_path, content))["code-selection"] == (
        "FAIL code-selection: Kernels.so-000-gfx1100.hsaco: e_flags 0x346, not EF_AMDGPU_MACH 0x41 of gfx1100")


def test_judge_reads_comgrs_answers():
    refs = [code_selection.BundleRef("pkg/bin/libggml-hip.so", 0, "/x/0", True),
            code_selection.BundleRef("pkg/bin/libggml-hip.so", 1, "/x/1", False)]
    good = {"gfx1201": {"size": 10, "e_flags": 0x4E}, "gfx1200": {"size": 0, "e_flags": None}}
    assert code_selection.judge(refs, [good, good], {}, "gfx1201", elf_machs()) == []
    wrong = {"gfx1201": {"size": 10, "e_flags": 0x48}, "gfx1200": {"size": 0}}
    failed = {"gfx1201": {"size": 0, "error": "do_action(UNBUNDLE): comgr status 2"}, "gfx1200": {"size": 0}}
    assert code_selection.judge(refs, [wrong, failed], {}, "gfx1201", elf_machs()) == [
        "libggml-hip.so bundle 0: the gfx1201 code object's e_flags are 0x48, not EF_AMDGPU_MACH 0x4e",
        "libggml-hip.so bundle 1: comgr finds no gfx1201 code object (do_action(UNBUNDLE): comgr status 2)"]


# --------------------------------------------------------------------------- stand-ins

STANDIN = {
    "package": "librocsolver0", "version": "7.2.4-1~exp1+moshibuild1", "soname": "librocsolver.so.0",
    "replaces": "rocSOLVER 7.2.4", "consumer": "libhipblas.so.3", "return_value": 2, "license": "MIT",
    "solver_functions": "^hipblas[SDCZ](getrf|getrs|getri|geqrf|gels)",
    "symbols": ["rocsolver_sgetrf", "rocsolver_dgels"],
}


@pytest.fixture(scope="module")
def standin_elf(tmp_path_factory, elf):
    d = tmp_path_factory.mktemp("standin")
    f = {"solver": gcc(d / "librocsolver-0a1b2c3d.so.0", "int rocsolver_sgetrf(void) { return 2; }\n"
                       "int rocsolver_dgels(void) { return 2; }\n")}
    f["hipblas"] = gcc(d / "libhipblas-4e5f6a7b.so.3.2", "int rocsolver_sgetrf(void);\n"
                       "int hipblasSgetrf(void) { return rocsolver_sgetrf(); }\nint hipblasSgemm(void) { return 0; }\n",
                       libs=(f["solver"],))
    hip_src = ("int demo_core(void); int rocblas_create_handle(void); int hipblasSgemm(void);\n"
               "int ggml_backend_init(void) { return demo_core() + rocblas_create_handle() + hipblasSgemm(); }\n")
    libs = (elf["core"], elf["rocblas"], elf["hip"], f["hipblas"])
    f["ggml-hip"] = gcc(d / "ok" / "libggml-hip.so", fatbin_source({"gfx1100": 128}) + hip_src, libs=libs,
                        rpath=f"$ORIGIN:$ORIGIN/../../{LIBS}")
    f["ggml-hip-solver"] = gcc(d / "solver" / "libggml-hip.so", fatbin_source({"gfx1100": 128}) + hip_src
                               + "int hipblasSgetrf(void); int solve(void) { return hipblasSgetrf(); }\n",
                               libs=libs, rpath=f"$ORIGIN:$ORIGIN/../../{LIBS}")
    f["ggml-hip-direct"] = gcc(d / "direct" / "libggml-hip.so", fatbin_source({"gfx1100": 128}) + hip_src
                               + "int rocsolver_dgels(void); int solve(void) { return rocsolver_dgels(); }\n",
                               libs=libs + (f["solver"],), rpath=f"$ORIGIN:$ORIGIN/../../{LIBS}")
    return f


def standin_members(elf, standin_elf, ggml_hip: str = "ggml-hip") -> dict:
    content = members(elf)
    info = runtime_json()
    info["standins"] = [STANDIN]
    info["system_packages"] += [
        {"package": "librocsolver0", "version": STANDIN["version"], "license": "MIT", "libraries": ["librocsolver.so.0"]},
        {"package": "libhipblas3", "version": "7.2.4-1~exp1", "license": "MIT", "libraries": ["libhipblas.so.3"]}]
    content[f"{PKG}/_runtime.json"] = json.dumps(info).encode()
    content[f"{LIBS}/librocsolver-0a1b2c3d.so.0"] = standin_elf["solver"]
    content[f"{LIBS}/libhipblas-4e5f6a7b.so.3.2"] = standin_elf["hipblas"]
    content[f"{PKG}/bin/libggml-hip.so"] = standin_elf[ggml_hip]
    for extra in ("LICENSES/system/librocsolver0/copyright", "LICENSES/system/libhipblas3/copyright"):
        content[f"{DIST_INFO}/licenses/{extra}"] = b"copyright\n"
    meta = content[f"{DIST_INFO}/METADATA"].decode() + "".join(
        f"License-File: LICENSES/system/{p}/copyright\n" for p in ("librocsolver0", "libhipblas3"))
    content[f"{DIST_INFO}/METADATA"] = meta.encode()
    return content


def test_standin_imported_only_by_its_consumer_passes(tmp_path, elf, standin_elf):
    results = check(tmp_path, standin_members(elf, standin_elf))
    assert failing(results) == {}
    assert results["standins"].line == (
        "PASS standins: librocsolver.so.0 stands in for rocSOLVER 7.2.4 (2 functions); only libhipblas.so.3 "
        "imports them, and nothing imports its solver functions")


def test_a_library_calling_a_solver_function_fails_standins(tmp_path, elf, standin_elf):
    failed = failing(check(tmp_path, standin_members(elf, standin_elf, "ggml-hip-solver")))
    assert failed == {"standins": "FAIL standins: libggml-hip.so imports hipblasSgetrf of libhipblas.so.3, which "
                                  "reaches the stand-in librocsolver.so.0"}


def test_a_library_importing_the_standin_directly_fails(tmp_path, elf, standin_elf):
    failed = failing(check(tmp_path, standin_members(elf, standin_elf, "ggml-hip-direct")))
    assert failed["standins"] == ("FAIL standins: libggml-hip.so imports rocsolver_dgels, which only the "
                                  "stand-in librocsolver.so.0 defines (each of its functions returns 2 (not implemented))")


def test_no_root_to_run_comgr_in_is_a_failed_check_not_a_crash(tmp_path, elf):
    from builder.errors import ToolchainError

    def cannot(needed):
        raise ToolchainError("the clean root filesystem needs root (mmdebstrap, chroot)")

    results = check(tmp_path, members(elf), probe_root=cannot)
    assert failing(results) == {"code-selection": "FAIL code-selection: no root filesystem to run the wheel's "
                                "comgr in: the clean root filesystem needs root (mmdebstrap, chroot)"}
