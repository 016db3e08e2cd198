"""moshi-build verify: a good wheel passes, each kind of sabotage fails with a clear line.

The wheels here are small but real: ELF files compiled with the host's gcc
(executables and libraries linked the way auditwheel leaves them: grafted
names, $ORIGIN RPATHs), .hip_fatbin sections holding clang offload bundles in
the real format (tests/helpers/offload.py's writer), a rocBLAS kernel folder,
licenses and METADATA, packed with zipfile under a manylinux tag.
"""

from __future__ import annotations

import base64
import hashlib
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
from tests.helpers import sbom as sbom_helper
from tests.helpers.cli import run_cli

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


def pack(directory: Path, content: dict[str, bytes | Path], tag: str = TAG, *,
         dist_info: str = DIST_INFO, with_sbom: bool = True) -> Path:
    """The wheel file <dist_info's name and version>-py3-none-<tag>.whl in `directory`, with an SBOM
    of its members (tests/helpers/sbom.py) unless with_sbom is false or `content` has one."""
    path = directory / f"{dist_info.removesuffix('.dist-info')}-py3-none-{tag}.whl"
    directory.mkdir(parents=True, exist_ok=True)
    if with_sbom:
        content = sbom_helper.add_to(dict(content), dist_info)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        names = list(content) + [f"{dist_info}/RECORD"]
        data_of = {n: d.read_bytes() if isinstance(d, Path) else d for n, d in content.items()}
        data_of.setdefault(names[-1], record_of(data_of, names[-1]))
        for name in names:
            data = data_of[name]
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if data[:4] == b"\x7fELF" else 0o644) << 16
            zf.writestr(info, data)
    return path


def record_of(data_of: dict[str, bytes], record: str) -> bytes:
    """RECORD as pip writes it: path,sha256=<urlsafe base64, no padding>,size (RECORD itself: path,,)."""
    rows = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
            for n, d in data_of.items() if n != record]
    return "".join(f"{r}\n" for r in rows + [f"{record},,"]).encode()


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
    assert list(results) == ["archive", "runtime-info", "elf-closure", "rpath", "backends", "gpu-code", "kernels",
                             "code-selection", "standins", "build-paths", "licenses", "sbom", "manylinux", "glibc-floor"]
    assert failing(results) == {}
    assert results["gpu-code"].line == ("PASS gpu-code: libggml-hip.so 0.0 MB for gfx1100 in 1 bundle; "
                                        "librocblas-5e6f7a8b.so.4 0.0 MB for gfx1100 in 1 bundle")
    assert results["code-selection"].line == (
        "PASS code-selection: the wheel's comgr, run in this machine, gives a gfx1100 code object for each of 4 bundles and "
        "code-object files (4 files) and nothing for 13 other targets")
    assert results["standins"].line == "PASS standins: the wheel carries no generated stand-in"
    assert results["kernels"].line == ("PASS kernels: moshi_rocm/rocblas/library/: 3 gfx1100 files, "
                                       "1 for any target")
    assert results["elf-closure"].line.endswith(f"allow-list; dlopen'd: libamd_comgr.so.3")
    assert results["manylinux"].line.startswith(f"PASS manylinux: {TAG} matches the newest symbol versions needed from the system: GLIBC_2.34")


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
    assert [l.split(":")[0] for l in out[1:]] == [f"  PASS {c}" for c in ("archive", "runtime-info", "elf-closure", "rpath",
                                                  "backends", "gpu-code", "kernels", "code-selection", "standins", "build-paths",
                                                  "licenses", "sbom", "manylinux", "glibc-floor")]
    assert run_cli(["verify", "--json", str(good), str(bad)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [w["ok"] for w in doc["wheels"]] == [True, False]
    failed = [c for c in doc["wheels"][1]["checks"] if not c["ok"]]
    assert [c["check"] for c in failed] == ["gpu-code", "code-selection"]
    assert failed[0]["problems"] == ["libggml-hip.so carries code objects for gfx1030, none for gfx1100"]


def test_cli_json_covers_an_argument_that_is_not_a_wheel(tmp_path, elf, capsys, offload_reader_for_comgr):
    """Probes F17a/F17b: a non-wheel among good wheels printed no JSON at all."""
    good = pack(tmp_path / "good", members(elf))
    junk = tmp_path / "junk-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip archive\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert run_cli(["verify", "--json", str(good), str(junk), str(notes)]) == 16
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is False
    assert [(Path(w["wheel"]).name, w["ok"]) for w in doc["wheels"]] == [
        (good.name, True), (junk.name, False), (notes.name, False)]
    assert "not a wheel" in doc["wheels"][1]["error"] and "not a wheel" in doc["wheels"][2]["error"]
    assert "2 of 3 argument(s) are not wheels" in captured.err and "Traceback" not in captured.err


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


# --------------------------------------------------------------------------- the pair: base wheel + target wheel
# docs/WHEEL-PAIR.md: moshi-rocm carries the tools, the CPU backends and the shared ROCm runtime
# (libamdhip64.so.7 and comgr in moshi_rocm/bin, what they need grafted in moshi_rocm.libs);
# moshi-rocm-gfx1100 carries the HIP backend, rocBLAS and its kernels, linking the base's bin/.

VERSION = "1.0.post0"
BASE_DIST_INFO = f"moshi_rocm-{VERSION}.dist-info"
BASE_LIBS = "moshi_rocm.libs"
TPKG = "moshi_rocm_gfx1100"
TLIBS = "moshi_rocm_gfx1100.libs"
TARGET_RUNPATH = f"$ORIGIN/../{TLIBS}:$ORIGIN:$ORIGIN/../{PKG}/bin"
Z3_STANDIN = {"package": "libz3-4", "version": "4.13.3-1+moshibuild1", "soname": "libz3.so.4", "replaces": "Z3 4.13.3",
              "consumer": "libLLVM.so.22.1", "return_value": 0, "license": "MIT",
              "symbols": ["Z3_mk_config", "Z3_del_config"]}


@pytest.fixture(scope="module")
def pair_elf(tmp_path_factory, standin_elf):
    d = tmp_path_factory.mktemp("pair")
    base_libs = f"$ORIGIN:$ORIGIN/../../{BASE_LIBS}"
    f = {"hsa": gcc(d / "libhsa-runtime64-1a2b3c4d.so.1", "int hsa_init(void) { return 0; }\n"),
         "z3": gcc(d / "libz3-0a1b2c3d.so.4", "int Z3_mk_config(void) { return 0; }\n"
                                              "int Z3_del_config(void) { return 0; }\n"),
         "ggml-base": gcc(d / "libggml-base.so.0", "int ggml_base(void) { return 1; }\n")}
    f["llvm"] = gcc(d / "libLLVM-5e6f7a8b.so.22.1", "int Z3_mk_config(void);\n"
                    "int llvm_solve(void) { return Z3_mk_config(); }\n", libs=(f["z3"],))
    f["comgr"] = gcc(d / "libamd_comgr.so.3", "int llvm_solve(void);\n"
                     "int amd_comgr_get_version(void) { return 3 + llvm_solve(); }\n", libs=(f["llvm"],), rpath=base_libs)
    f["hip"] = gcc(d / "libamdhip64.so.7", "int hsa_init(void); int hipInit(int f) { return f + hsa_init(); }\n",
                   libs=(f["hsa"],), rpath=base_libs)
    f["cpu"] = gcc(d / "libggml-cpu-haswell.so", "int ggml_base(void);\n"
                   "int ggml_backend_cpu_init(void) { return ggml_base(); }\n", libs=(f["ggml-base"],))
    f["tool"] = gcc(d / "moshi-demo", "int ggml_base(void);\nint main(void) { return ggml_base() - 1; }\n",
                    shared=False, libs=(f["ggml-base"],))
    t = d / "target"
    f["rocblas"] = gcc(t / "librocblas-5e6f7a8b.so.4", fatbin_source({"gfx1100": 96}, compress=True)
                       + "int hipInit(int); int rocblas_create_handle(void) { return hipInit(0); }\n",
                       libs=(f["hip"],), rpath=f"$ORIGIN:$ORIGIN/../{PKG}/bin")
    # The HIP backend calls dlopen@GLIBC_2.34 (a library has no __libc_start_main): the target's tag is manylinux_2_34.
    hip_src = ("#include <dlfcn.h>\nint ggml_base(void); int rocblas_create_handle(void); int hipblasSgemm(void);\n"
               "int hipInit(int);\nvoid *ggml_hip_open(void) { return dlopen(\"libdemo.so\", RTLD_NOW); }\n"
               "int ggml_backend_init(void) { return ggml_base() + rocblas_create_handle() + hipblasSgemm() "
               "+ hipInit(0); }\n")
    libs = (f["ggml-base"], f["rocblas"], f["hip"], standin_elf["hipblas"])
    f["ggml-hip"] = gcc(t / "libggml-hip.so", fatbin_source({"gfx1100": 128}) + hip_src, libs=libs,
                        rpath=TARGET_RUNPATH)
    # Sabotaged: linking a library the base grafted (not one it provides), through a RUNPATH into moshi_rocm.libs
    f["ggml-hip-hsa"] = gcc(t / "hsa" / "libggml-hip.so", fatbin_source({"gfx1100": 128}) + hip_src
                            + "int hsa_init(void); int hsa(void) { return hsa_init(); }\n",
                            libs=libs + (f["hsa"],), rpath=f"{TARGET_RUNPATH}:$ORIGIN/../{BASE_LIBS}")
    # Sabotaged: calling the base's Z3 stand-in (only libLLVM may)
    f["ggml-hip-z3"] = gcc(t / "z3" / "libggml-hip.so", fatbin_source({"gfx1100": 128}) + hip_src
                           + "int Z3_mk_config(void); int z3(void) { return Z3_mk_config(); }\n",
                           libs=libs + (f["z3"],), rpath=TARGET_RUNPATH)
    f.update({k: standin_elf[k] for k in ("hipblas", "solver")})
    return f


def system_package(package: str, library: str, license: str = "MIT") -> dict:
    return {"package": package, "version": "7.2.4-1", "license": license, "libraries": [library]}


def base_runtime_json(version: str = VERSION, **changes) -> dict:
    info = {
        "kind": "base", "distribution": "moshi-rocm", "version": version, "package": PKG,
        "tools": ["moshi-demo"], "entry_points": {"moshi_demo": "moshi-demo"}, "bin_dir": "bin",
        "library_dirs": ["bin", f"../{BASE_LIBS}"], "env": {},
        "components": [{"name": "demo", "version": "1.0", "license": "MIT"}],
        "system_packages": [system_package("libamdhip64-7", "libamdhip64.so.7"),
                            system_package("libhsa-runtime64-1", "libhsa-runtime64.so.1", "NCSA"),
                            system_package("libamd-comgr3", "libamd_comgr.so.3", "NCSA"),
                            system_package("libllvm22", "libLLVM.so.22.1", "Apache-2.0 WITH LLVM-exception"),
                            system_package("libz3-4", "libz3.so.4")],
        "standins": [Z3_STANDIN], "dlopen": [COMGR_RULE],
        "target_distribution": "moshi-rocm-{gpu_target}", "target_package": "moshi_rocm_{gpu_target}",
        "provides": ["libggml-base.so.0", "libamdhip64.so.7"],
    }
    info.update(changes)
    return info


def target_json(**changes) -> dict:
    info = {
        "kind": "target", "distribution": "moshi-rocm-gfx1100", "version": VERSION, "gpu_target": TARGET,
        "base": "moshi-rocm", "requires": f"moshi-rocm=={VERSION}", "backend": "libggml-hip.so",
        "env": {"ROCBLAS_TENSILE_LIBPATH": "rocblas/library"}, "library_dirs": [".", f"../{TLIBS}"],
        "components": [{"name": "demo", "version": "1.0", "license": "MIT"}],
        "system_packages": [system_package("librocblas4", "librocblas.so.4"),
                            system_package("libhipblas3", "libhipblas.so.3"),
                            system_package("librocsolver0", "librocsolver.so.0")],
        "standins": [STANDIN],
    }
    info.update(changes)
    return info


def with_licenses(m: dict, dist_info: str, name: str, version: str, info: dict, requires: str = "") -> dict:
    """METADATA, WHEEL and a license file for every component and system package `info` names."""
    files = [f"LICENSES/{c['name']}/LICENSE" for c in info["components"]]
    files += [f"LICENSES/system/{p['package']}/copyright" for p in info["system_packages"]]
    for lic in files:
        m[f"{dist_info}/licenses/{lic}"] = f"license text of {lic}\n".encode()
    m[f"{dist_info}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-{TAG}\n".encode()
    m[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\nLicense-Expression: MIT\n"
                                  + (f"Requires-Dist: {requires}\n" if requires else "")
                                  + "".join(f"License-File: {lic}\n" for lic in files)).encode()
    return m


def base_members(pair_elf, version: str = VERSION, **changes) -> dict:
    info = base_runtime_json(version, **changes)
    m: dict[str, bytes | Path] = {
        f"{PKG}/__init__.py": b"",
        f"{PKG}/_runtime.json": json.dumps(info, indent=2).encode(),
        f"{PKG}/bin/moshi-demo": pair_elf["tool"],
        f"{PKG}/bin/libggml-base.so.0": pair_elf["ggml-base"],
        f"{PKG}/bin/libggml-cpu-haswell.so": pair_elf["cpu"],
        f"{PKG}/bin/libamdhip64.so.7": pair_elf["hip"],
        f"{PKG}/bin/libamd_comgr.so.3": pair_elf["comgr"],
        f"{BASE_LIBS}/libhsa-runtime64-1a2b3c4d.so.1": pair_elf["hsa"],
        f"{BASE_LIBS}/libLLVM-5e6f7a8b.so.22.1": pair_elf["llvm"],
        f"{BASE_LIBS}/libz3-0a1b2c3d.so.4": pair_elf["z3"],
    }
    return with_licenses(m, f"moshi_rocm-{version}.dist-info", "moshi-rocm", version, info)


def target_members(pair_elf, ggml_hip: str = "ggml-hip", **changes) -> dict:
    info = target_json(**changes)
    m: dict[str, bytes | Path] = {
        f"{TPKG}/_target.json": json.dumps(info, indent=2).encode(),
        f"{TPKG}/libggml-hip.so": pair_elf[ggml_hip],
        f"{TPKG}/rocblas/library/TensileLibrary_Type_HH_Contraction_gfx1100.dat": b"kernels for gfx1100",
        f"{TPKG}/rocblas/library/Kernels.so-000-gfx1100.hsaco": code_object("gfx1100", 80),
        f"{TPKG}/rocblas/library/TensileLibrary_Type_HH_Contraction_gfx1100.co": compress_bundle(
            bundle({"host-x86_64-unknown-linux-gnu-": b"", HIPV4 + "gfx1100": code_object("gfx1100", 96)}), 3, 1),
        f"{TPKG}/rocblas/library/TensileLibrary_Type_HH_Contraction_fallback.dat": b"any target",
        f"{TLIBS}/librocblas-5e6f7a8b.so.4": pair_elf["rocblas"],
        f"{TLIBS}/libhipblas-4e5f6a7b.so.3.2": pair_elf["hipblas"],
        f"{TLIBS}/librocsolver-0a1b2c3d.so.0": pair_elf["solver"],
    }
    return with_licenses(m, DIST_INFO, "moshi-rocm-gfx1100", VERSION, info, requires=f"moshi-rocm=={VERSION}")


def pack_base(directory: Path, content: dict, version: str = VERSION) -> Path:
    return pack(directory, content, dist_info=f"moshi_rocm-{version}.dist-info")


def verify_pair(path: Path, tmp_path: Path, **kwargs) -> verify.VerifyReport:
    kwargs.setdefault("probe_root", fake_probe_root())
    report = verify.verify_wheel(path, build_paths=[tmp_path / "build-cache"], **kwargs)
    print(f"{path.name} ({report.label})\n" + "\n".join(report.lines()))
    return report


def results_of(report: verify.VerifyReport) -> dict[str, verify.CheckResult]:
    return {c.name: c for c in report.checks}


PAIR_CHECKS = ["archive", "base-wheel", "runtime-info", "elf-closure", "rpath", "backends", "gpu-code", "kernels",
               "code-selection", "standins", "build-paths", "licenses", "sbom", "manylinux", "glibc-floor"]


def test_a_base_wheel_is_verified_on_its_own(tmp_path, pair_elf):
    base = pack_base(tmp_path / "wheelhouse", base_members(pair_elf))
    report = verify_pair(base, tmp_path)
    results = results_of(report)
    assert list(results) == [c for c in PAIR_CHECKS if c != "base-wheel"]
    assert failing(results) == {}
    assert (report.kind, report.gpu_target, report.label) == ("base", None, "base wheel")
    for name in ("gpu-code", "kernels", "code-selection"):
        assert results[name].line == f"PASS {name}: not applicable: a base wheel carries no GPU code"
    assert results["backends"].line == (f"PASS backends: {PKG}/bin/: 1 libggml-cpu-*.so (the GPU backend comes with "
                                        "the target wheels)")
    assert results["elf-closure"].line.endswith(f"dlopen'd: libamd_comgr.so.3; {PKG}/bin/ holds the 2 SONAMEs it provides")
    assert results["standins"].line == ("PASS standins: libz3.so.4 stands in for Z3 4.13.3 (2 functions); only "
                                        "libLLVM.so.22.1 imports them")
    assert results["runtime-info"].line == ("PASS runtime-info: moshi-rocm 1.0.post0: the base wheel, providing "
                                            "2 SONAMEs to moshi-rocm-{gpu_target} wheels")
    assert report.to_json()["kind"] == "base" and "base" not in report.to_json()


def test_a_base_wheel_with_a_gpu_backend_or_a_missing_provided_library_fails(tmp_path, pair_elf):
    content = base_members(pair_elf, provides=["libggml-base.so.0", "libamdhip64.so.7", "libhipblas.so.3"])
    content[f"{PKG}/bin/libggml-hip.so"] = pair_elf["ggml-base"]
    assert failing(results_of(verify_pair(pack_base(tmp_path / "w", content), tmp_path))) == {
        "elf-closure": f"FAIL elf-closure: {PKG}/_runtime.json provides libhipblas.so.3 to target wheels, but "
                       f"{PKG}/bin/ has no such file",
        "backends": f"FAIL backends: {PKG}/bin/ has libggml-hip.so: a base wheel carries no GPU backend (it comes "
                    "with the target wheels)"}


def recording_probe_root(seen: list[str]) -> code_selection.ProbeRoot:
    """The offload reader standing in for comgr; records what was unpacked for the probe."""
    def run(argv):
        manifest = json.loads(Path(argv[2]).read_text())
        comgr = Path(manifest["comgr"])
        unpacked = comgr.parents[2]          # <unpacked>/moshi_rocm/bin/libamd_comgr.so.3
        seen.extend(sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()))
        return offload_reader_probe(argv)
    return code_selection.ProbeRoot(Path("/"), run)


def test_a_good_pair_passes(tmp_path, pair_elf):
    base = pack_base(tmp_path / "wheelhouse", base_members(pair_elf))
    target = pack(tmp_path / "wheelhouse", target_members(pair_elf))
    unpacked: list[str] = []
    report = verify_pair(target, tmp_path, probe_root=recording_probe_root(unpacked))
    results = results_of(report)
    assert list(results) == PAIR_CHECKS
    assert failing(results) == {}
    assert report.kind == "target" and report.base == {"wheel": base.name, "version": VERSION}
    assert report.label == f"gfx1100, with {base.name}"
    assert results["base-wheel"].line == (f"PASS base-wheel: {base.name} (beside it): moshi-rocm 1.0.post0, "
                                          f"providing 2 SONAMEs in {PKG}/bin/")
    assert results["runtime-info"].line == ("PASS runtime-info: moshi-rocm-gfx1100 1.0.post0 for gfx1100, with "
                                            "moshi-rocm 1.0.post0")
    assert results["elf-closure"].line == (
        f"PASS elf-closure: 5 ELF files, 3 DT_NEEDED resolved inside the wheel, 3 in the base wheel's {PKG}/bin/ "
        f"(libamdhip64.so.7, libggml-base.so.0), the rest on the {TAG} allow-list; dlopen'd: none")
    assert results["rpath"].line == (f"PASS rpath: every RPATH/RUNPATH of 5 ELF files is $ORIGIN-relative, in the "
                                     f"wheel or the base wheel's {PKG}/bin/ (2 naming the base)")
    assert results["backends"].line == (f"PASS backends: {TPKG}/libggml-hip.so: the GPU backend the launcher loads "
                                        "(GGML_BACKEND_PATH)")
    assert results["kernels"].line == (f"PASS kernels: {TPKG}/rocblas/library/: 3 gfx1100 files, 1 for any target")
    assert results["code-selection"].line == (
        "PASS code-selection: the base wheel's comgr, run in this machine, gives a gfx1100 code object for each of 4 bundles and "
        "code-object files (4 files) and nothing for 13 other targets")
    # comgr is unpacked from the base wheel with what it loads (not the tools), beside the target's bundles
    assert [m for m in unpacked if not m.startswith(f"{TPKG}/")] == [
        f"{PKG}.libs/libLLVM-5e6f7a8b.so.22.1", f"{PKG}.libs/libz3-0a1b2c3d.so.4", f"{PKG}/bin/libamd_comgr.so.3",
        f"{TLIBS}/librocblas-5e6f7a8b.so.4"]
    assert results["standins"].line == (
        "PASS standins: librocsolver.so.0 stands in for rocSOLVER 7.2.4 (2 functions); only libhipblas.so.3 imports "
        "them, and nothing imports its solver functions; libz3.so.4 stands in for Z3 4.13.3 (2 functions); only "
        "libLLVM.so.22.1 imports them (in either wheel of the pair)")
    assert results["manylinux"].line.startswith(f"PASS manylinux: {TAG} matches the newest symbol versions needed from the system: GLIBC_2.34")
    # The base wheel given explicitly, from another folder, does the same.
    alone = pack(tmp_path / "alone", target_members(pair_elf))
    given = verify_pair(alone, tmp_path, base=base)
    assert given.ok and results_of(given)["base-wheel"].line.startswith(f"PASS base-wheel: {base.name} (given): ")


def test_a_target_wheel_alone_fails_with_one_line(tmp_path, pair_elf):
    target = pack(tmp_path / "alone", target_members(pair_elf))
    line = (f"FAIL base-wheel: {target.name} is a target wheel: verify it with its base wheel moshi-rocm==1.0.post0 "
            "(put moshi_rocm-1.0.post0-*.whl beside it or pass --base)")
    report = verify_pair(target, tmp_path)
    assert report.lines() == [line] and not report.ok
    assert report.to_json()["kind"] == "target" and report.to_json()["base"] is None
    # A base wheel of another version beside it is not its base wheel.
    pack_base(tmp_path / "alone", base_members(pair_elf, "1.1"), "1.1")
    assert verify_pair(target, tmp_path).lines() == [line]


def test_a_base_wheel_of_another_version_fails_naming_both(tmp_path, pair_elf):
    base = pack_base(tmp_path / "other", base_members(pair_elf, "1.1"), "1.1")
    target = pack(tmp_path / "wheelhouse", target_members(pair_elf))
    report = verify_pair(target, tmp_path, base=base)
    assert report.lines() == [f"FAIL base-wheel: {base.name} is moshi-rocm 1.1, but {target.name} is version "
                              "1.0.post0: a target wheel goes with the base wheel of its own version "
                              "(moshi-rocm==1.0.post0)"]
    assert report.to_json()["base"] == {"wheel": base.name, "version": "1.1"}
    # Another target wheel is not a base wheel.
    report = verify_pair(target, tmp_path, base=pack(tmp_path / "another", target_members(pair_elf)))
    assert report.lines()[0].startswith(f"FAIL base-wheel: {target.name} is not the base wheel moshi-rocm")


def test_a_target_needing_a_soname_the_base_does_not_provide_fails_elf_closure(tmp_path, pair_elf):
    base = pack_base(tmp_path / "wheelhouse", base_members(pair_elf, provides=["libamdhip64.so.7"]))
    target = pack(tmp_path / "wheelhouse", target_members(pair_elf))
    assert failing(results_of(verify_pair(target, tmp_path))) == {"elf-closure": (
        f"FAIL elf-closure: {TPKG}/libggml-hip.so needs libggml-base.so.0: the base wheel has it "
        f"({PKG}/bin/libggml-base.so.0), but does not provide it (its _runtime.json provides libamdhip64.so.7)")}
    assert base.exists()


def test_a_target_linking_a_library_the_base_grafted_fails(tmp_path, pair_elf):
    pack_base(tmp_path / "wheelhouse", base_members(pair_elf))
    target = pack(tmp_path / "wheelhouse", target_members(pair_elf, "ggml-hip-hsa"))
    assert failing(results_of(verify_pair(target, tmp_path))) == {
        "elf-closure": f"FAIL elf-closure: {TPKG}/libggml-hip.so needs libhsa-runtime64-1a2b3c4d.so.1: the base wheel "
                       f"has it ({BASE_LIBS}/libhsa-runtime64-1a2b3c4d.so.1), but does not provide it (its "
                       "_runtime.json provides libamdhip64.so.7, libggml-base.so.0)",
        "rpath": f"FAIL rpath: {TPKG}/libggml-hip.so: RPATH entries outside {TPKG}/, {TLIBS}/ and the base wheel's "
                 f"{PKG}/bin/: $ORIGIN/../{BASE_LIBS} ({BASE_LIBS})"}


def test_a_target_calling_the_bases_standin_fails_standins(tmp_path, pair_elf):
    pack_base(tmp_path / "wheelhouse", base_members(pair_elf))
    target = pack(tmp_path / "wheelhouse", target_members(pair_elf, "ggml-hip-z3"))
    failed = failing(results_of(verify_pair(target, tmp_path)))
    assert failed["standins"] == ("FAIL standins: libggml-hip.so imports Z3_mk_config, which only the stand-in "
                                  "libz3.so.4 defines (each of its functions returns 0 (not implemented))")
    assert "libz3-0a1b2c3d.so.4" in failed["elf-closure"]


def test_a_target_without_its_backend_or_pin_fails(tmp_path, pair_elf):
    pack_base(tmp_path / "wheelhouse", base_members(pair_elf))
    content = target_members(pair_elf, requires="moshi-rocm>=1.0", backend="libggml-rocm.so")
    content[f"{PKG}/bin/libextra.so"] = b"not the target's to write"
    failed = failing(results_of(verify_pair(pack(tmp_path / "wheelhouse", content), tmp_path)))
    assert failed == {
        "runtime-info": f"FAIL runtime-info: {TPKG}/_target.json requires 'moshi-rocm>=1.0', not moshi-rocm==1.0.post0; "
                        f"1 file outside {TPKG}/ and {TLIBS}/ (they would overwrite the base wheel's or another "
                        f"target's), e.g. {PKG}/bin/libextra.so",
        "backends": f"FAIL backends: {TPKG}/_target.json names the backend libggml-rocm.so, but "
                    f"{TPKG}/libggml-rocm.so is not in the wheel; the launcher would load no GPU backend"}


def test_cli_reports_the_pair(tmp_path, pair_elf, capsys, offload_reader_for_comgr):
    base = pack_base(tmp_path / "wheelhouse", base_members(pair_elf))
    target = pack(tmp_path / "wheelhouse", target_members(pair_elf))
    assert run_cli(["verify", "--json", str(base), str(target)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert [(w["kind"], w["gpu_target"]) for w in doc["wheels"]] == [("base", None), ("target", "gfx1100")]
    assert doc["wheels"][1]["base"] == {"wheel": base.name, "version": VERSION}
    assert [c["check"] for c in doc["wheels"][1]["checks"]] == PAIR_CHECKS
    # Alone in its folder: one line and the exit code of a failed check; --base pairs it.
    alone = pack(tmp_path / "alone", target_members(pair_elf))
    assert run_cli(["verify", str(alone)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{alone.name} (gfx1100, no base wheel, ")
    assert out[1:] == [f"  FAIL base-wheel: {alone.name} is a target wheel: verify it with its base wheel "
                       "moshi-rocm==1.0.post0 (put moshi_rocm-1.0.post0-*.whl beside it or pass --base)"]
    assert run_cli(["verify", "--base", str(base), str(alone)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{alone.name} (gfx1100, with {base.name}, ")
    assert [l.split(":")[0] for l in out[1:]] == [f"  PASS {c}" for c in PAIR_CHECKS]


def test_a_self_contained_wheel_reports_as_before(tmp_path, elf):
    report = verify.verify_wheel(pack(tmp_path / "w", members(elf)), probe_root=fake_probe_root())
    assert report.kind == "wheel" and report.label == TARGET
    assert set(report.to_json()) == {"wheel", "gpu_target", "ok", "seconds", "checks"}


# --------------------------------------------------------------------------- the wheel as pip installs it

def repack(wheel: Path, out: Path, *, drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None,
           extra: tuple[zipfile.ZipInfo | str, ...] = (), extra_data: bytes = b"x") -> Path:
    """`wheel` copied to the folder `out` with members dropped, replaced (RECORD left as it was) or added."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            dst.writestr(info, (replace or {}).get(info.filename, src.read(info)))
        for info in extra:
            dst.writestr(info, extra_data)
    return path


def archive_line(tmp_path: Path, wheel: Path) -> tuple[str, dict[str, verify.CheckResult]]:
    report = verify.verify_wheel(wheel, probe_root=fake_probe_root(), build_paths=[tmp_path / "build-cache"])
    print("\n".join(report.lines()))
    results = {c.name: c for c in report.checks}
    assert report.checks[0].name == "archive" and not report.ok
    return results["archive"].line, results


@pytest.mark.parametrize("name, why", [
    ("../../evil", "../../evil is a path with a '..' component (it would land outside the install tree)"),
    ("/abs/path", "/abs/path is an absolute path"),
    (f"{PKG}/../../evil.so", f"{PKG}/../../evil.so is a path with a '..' component"),
])
def test_a_member_named_outside_the_install_tree_fails(tmp_path, elf, name, why):
    good = pack(tmp_path / "good", members(elf))
    line, _ = archive_line(tmp_path, repack(good, tmp_path / "bad", extra=(name,)))
    assert line.startswith(f"FAIL archive: {why}") and "pip refuses to install the wheel" in line


def test_a_symlink_is_no_cpu_backend(tmp_path, elf):
    """pip installs a symlink entry as a small text file holding its target: it stands for no library."""
    content = members(elf)
    cpu = f"{PKG}/bin/libggml-cpu-haswell.so"
    del content[cpu]
    good = pack(tmp_path / "good", content)
    link = zipfile.ZipInfo(cpu)
    link.create_system = 3
    link.external_attr = (0o120777) << 16
    line, results = archive_line(tmp_path, repack(good, tmp_path / "bad", extra=(link,), extra_data=b"libggml-hip.so"))
    assert line == (f"FAIL archive: {cpu} is a symbolic link: pip installs it as a small text file, so it stands "
                    "for no file of the wheel")
    assert not results["backends"].ok


RECORD = f"{DIST_INFO}/RECORD"


def test_record_problems_fail(tmp_path, elf):
    good = pack(tmp_path / "good", members(elf))
    init, config = f"{PKG}/__init__.py", f"{PKG}/bin/demo-config.json"
    record = zipfile.ZipFile(good).read(RECORD).decode()
    cases = {
        "no-record": (dict(drop=(RECORD,)), f"FAIL archive: the wheel has no {RECORD}: pip cannot install or uninstall it"),
        "wrong-hash": (dict(replace={config: b'{"model": "evil"}\n'}),
                       f"FAIL archive: {config} does not match its sha256 in {RECORD}"),
        "unlisted": (dict(extra=(f"{PKG}/extra.py",)), f"FAIL archive: {PKG}/extra.py is not listed in {RECORD}"),
        "missing": (dict(drop=(init,)), f"FAIL archive: {RECORD} lists {init}, which is not in the wheel"),
        "wrong-size": (dict(replace={RECORD: record.replace(f"{init},sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0",
                                                             f"{init},sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,7").encode()}),
                       f"FAIL archive: {init} is 0 bytes, but {RECORD} says 7"),
        "no-hash": (dict(replace={RECORD: record.replace(f"{init},sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0",
                                                          f"{init},,").encode()}),
                    f"FAIL archive: {RECORD} gives no hash for {init}"),
    }
    for case, (change, expected) in cases.items():
        line, _ = archive_line(tmp_path, repack(good, tmp_path / case, **change))
        assert line == expected, case


def test_verify_writes_nothing_beside_the_wheel(tmp_path, elf, monkeypatch):
    """A wheel in a read-only folder: members go to the system's temporary directory."""
    from builder.common import wheel_reader

    wheel = pack(tmp_path / "wheelhouse", members(elf))
    used = []
    real = wheel_reader.tempfile.TemporaryDirectory

    def recording(*args, dir=None, **kwargs):
        used.append(dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(wheel_reader.tempfile, "TemporaryDirectory", recording)
    wheel.parent.chmod(0o555)
    try:
        report = verify.verify_wheel(wheel, probe_root=fake_probe_root(), build_paths=[tmp_path / "build-cache"])
    finally:
        wheel.parent.chmod(0o755)
    assert report.ok and used == [None]
    assert list(wheel.parent.iterdir()) == [wheel]


def test_a_huge_json_member_is_cut_and_fails_in_one_line(tmp_path, elf):
    """Issue 24, item 8: verify keeps at most MAX_TEXT_BYTES of a JSON member in memory."""
    content = members(elf)
    content[f"{PKG}/_runtime.json"] = b"[" + b" " * (verify.MAX_TEXT_BYTES + (1 << 20)) + b"]"
    results = check(tmp_path, content)
    assert not results["runtime-info"].ok and "\n" not in results["runtime-info"].line
