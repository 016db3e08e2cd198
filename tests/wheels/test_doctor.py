"""moshi-rocm doctor: the verdict for a machine, read from fake KFD topologies in the real format;
and, for the base wheel, the launcher's choice among installed target wheels (docs/WHEEL-PAIR.md).

Fast tests run the wheel's package (wheels/src/moshi_rocm, with a _runtime.json
holding the target table the builder writes) as `python -m moshi_rocm doctor`
against sysfs and /dev trees laid out in tmp_path (MOSHI_ROCM_SYSFS,
MOSHI_ROCM_DEV), with Python 3.9 where this machine has it. A self-contained
wheel's _runtime.json (no "kind", its own gpu_target) is what the first tests
install; the split-wheel tests install a base package and target folders
(moshi_rocm_gfx*/_target.json) beside it and run a fake tool through the
launcher. The slow test runs the installed test application's wheel in the
clean root filesystem, where the files written under ROOT/sys and ROOT/dev are
what the tool sees.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from builder.package import project

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PKG = REPO / "wheels" / "src" / "moshi_rocm"
IS_ROOT = os.geteuid() == 0


def _package_python() -> str:
    """The package promises Python 3.9: run it with a working python3.9 where the machine has one
    (MOSHI_ROCM_TEST_PYTHON names another interpreter)."""
    chosen = os.environ.get("MOSHI_ROCM_TEST_PYTHON")
    if chosen:
        return chosen
    candidate = shutil.which("python3.9")
    if candidate:
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return sys.executable


PYTHON = _package_python()

# The properties file of a KFD topology node as the kernel prints it (kfd_topology.c,
# node_show: "name value" lines). A CPU node reports gfx_target_version 0.
CPU_NODE = """cpu_cores_count 16
simd_count 0
mem_banks_count 1
caches_count 0
io_links_count 1
p2p_links_count 0
cpu_core_id_base 0
simd_id_base 0
max_waves_per_simd 0
lds_size_in_kb 0
gds_size_in_kb 0
num_gws 0
wave_front_size 0
array_count 0
simd_arrays_per_engine 0
cu_per_simd_array 0
simd_per_cu 0
max_slots_scratch_cu 0
gfx_target_version 0
vendor_id 0
device_id 0
location_id 0
domain 0
drm_render_minor 0
hive_id 0
num_sdma_engines 0
num_sdma_xgmi_engines 0
num_sdma_queues_per_engine 0
num_cp_queues 0
max_engine_clk_ccompute 4950
"""

GPU_NODE = """cpu_cores_count 0
simd_count {simds}
mem_banks_count 1
caches_count 206
io_links_count 1
p2p_links_count 0
cpu_core_id_base 0
simd_id_base 2147487744
max_waves_per_simd 16
lds_size_in_kb 64
gds_size_in_kb 0
num_gws 64
wave_front_size 32
array_count 12
simd_arrays_per_engine 2
cu_per_simd_array 8
simd_per_cu 2
max_slots_scratch_cu 32
gfx_target_version {version}
vendor_id 4098
device_id {device_id}
location_id 768
domain 0
drm_render_minor {minor}
hive_id 0
num_sdma_engines 2
num_sdma_xgmi_engines 0
num_sdma_queues_per_engine 6
num_cp_queues 8
max_engine_clk_fcompute 2482
local_mem_size 0
fw_version 2200
capability 671588992
debug_prop 1495
sdma_fw_version 21
unique_id 12345678901234567
num_xcc 1
max_engine_clk_ccompute 4950
"""

GPUS = {  # gfx target -> (gfx_target_version, PCI device id)
    "gfx1100": (110000, 0x744C),   # Radeon RX 7900 XTX
    "gfx1030": (100300, 0x73BF),   # Radeon RX 6800 XT
    "gfx1031": (100301, 0x73DF),   # Radeon RX 6700 XT
    "gfx1201": (120001, 0x7550),   # Radeon RX 9070 XT
    "gfx1151": (110501, 0x1586),   # Radeon 8060S (Strix Halo)
    "gfx1150": (110500, 0x150E),   # Radeon 890M (Strix Point)
    "gfx1103": (110003, 0x15BF),   # Radeon 780M (Phoenix)
}
# The ROCm 7.2 stack's rocBLAS kernel targets (stacks.toml): the wheels that can exist.
KERNEL_TARGETS = ["gfx803", "gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx1010", "gfx1030", "gfx1100",
                  "gfx1101", "gfx1102", "gfx1151", "gfx1200", "gfx1201"]


def template_module(name: str):
    """A module of the launcher package, imported from the wheel template (wheels/src)."""
    import importlib

    sys.path.insert(0, str(TEMPLATE_PKG.parent))
    try:
        return importlib.import_module(f"moshi_rocm.{name}")
    finally:
        sys.path.remove(str(TEMPLATE_PKG.parent))


def runtime_info(target: str) -> dict:
    """What the builder writes into _runtime.json, with the real target table."""
    return {
        "distribution": f"moshi-rocm-{target}", "version": "1.0.post0", "gpu_target": target,
        "package": "moshi_rocm", "tools": ["fake-tool"], "entry_points": {"fake_tool": "fake-tool"},
        "bin_dir": "bin", "library_dirs": ["bin", f"../moshi_rocm_{target}.libs"],
        "env": {"ROCBLAS_TENSILE_LIBPATH": "rocblas/library"},
        "distribution_pattern": "moshi-rocm-{gpu_target}", "targets": project.target_table_for_runtime(KERNEL_TARGETS, "Debian's rocBLAS 7.2"),
        "components": [{"name": "ggml", "version": "0.25.3", "license": "MIT"}],
        "system_packages": [{"package": "libamdhip64-6", "version": "6.4.3-5", "license": "MIT",
                             "libraries": ["libamdhip64.so.6"]}],
    }


def install_package(site: Path, target: str) -> Path:
    pkg = site / "moshi_rocm"
    shutil.copytree(TEMPLATE_PKG, pkg, ignore=shutil.ignore_patterns("__pycache__", "selftest.py"))
    (pkg / "_runtime.json").write_text(json.dumps(runtime_info(target)))
    return pkg


def char_device(path: Path, mode: int = 0o666) -> None:
    """A character device node (with /dev/null's numbers: harmless if opened); a link to
    /dev/null where this user may not create device nodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if IS_ROOT:
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(1, 3))
        os.chmod(path, mode)   # mknod applies the umask
    else:
        os.symlink("/dev/null", path)


def machine(root: Path, gpus=(), kfd: str | None = "ok") -> tuple[Path, Path]:
    """sysfs and /dev trees under `root`: a CPU node, then one node per GPU target given."""
    sysfs, dev = root / "sys", root / "dev"
    nodes = sysfs / "class/kfd/kfd/topology/nodes"
    if kfd is not None:
        (nodes / "0").mkdir(parents=True)
        (nodes / "0" / "properties").write_text(CPU_NODE)
        (nodes / "0" / "name").write_text("\n")
        (nodes / "0" / "gpu_id").write_text("0\n")
    for i, target in enumerate(gpus, start=1):
        version, device_id = GPUS[target]
        node = nodes / str(i)
        node.mkdir(parents=True)
        node.joinpath("properties").write_text(GPU_NODE.format(simds=192, version=version, device_id=device_id,
                                                               minor=127 + i))
        node.joinpath("name").write_text(f"{target}\n")
        node.joinpath("gpu_id").write_text(f"{40000 + i}\n")
        char_device(dev / "dri" / f"renderD{127 + i}")
    dev.mkdir(parents=True, exist_ok=True)
    if kfd == "ok":
        char_device(dev / "kfd")
    elif kfd == "no-access":
        char_device(dev / "kfd", 0o000)
    return sysfs, dev


def doctor(site: Path, sysfs: Path, dev: Path, python: str = PYTHON, user: int | None = None,
           override: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site),
           "MOSHI_ROCM_SYSFS": str(sysfs), "MOSHI_ROCM_DEV": str(dev)}
    if override:
        env["HSA_OVERRIDE_GFX_VERSION"] = override
    preexec = None
    if user is not None:
        def preexec():
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)
    r = subprocess.run([python, "-m", "moshi_rocm", "doctor"], env=env, capture_output=True, text=True,
                       timeout=60, preexec_fn=preexec, cwd="/")
    print(r.stdout, r.stderr)
    return r


def verdict(r: subprocess.CompletedProcess) -> str:
    return next(line for line in r.stdout.splitlines() if line.startswith("verdict:"))


@pytest.fixture
def site(tmp_path):
    return tmp_path / "site"


@pytest.mark.parametrize("wheel_target, gpu, code, expected", [
    ("gfx1100", "gfx1100", 0, "verdict:  this wheel fits GPU 0 (gfx1100, this wheel's target): "
                              "run the tools with -d ROCm0"),
    ("gfx1100", "gfx1030", 1, "verdict:  GPU 0 is a gfx1030: this wheel carries gfx1100 code: "
                              "pip install moshi-rocm-gfx1030"),
    ("gfx1030", "gfx1030", 0, "verdict:  this wheel fits GPU 0 (gfx1030, this wheel's target): "
                              "run the tools with -d ROCm0"),
    ("gfx1030", "gfx1031", 1, "verdict:  GPU 0 is a gfx1031: runs this wheel's gfx1030 code with "
                              "HSA_OVERRIDE_GFX_VERSION=10.3.0: export HSA_OVERRIDE_GFX_VERSION=10.3.0"),
    ("gfx1100", "gfx1031", 1, "verdict:  GPU 0 is a gfx1031: this wheel carries gfx1100 code: pip install "
                              "moshi-rocm-gfx1030 and export HSA_OVERRIDE_GFX_VERSION=10.3.0"),
    # RDNA4 and Strix Halo
    ("gfx1201", "gfx1201", 0, "verdict:  this wheel fits GPU 0 (gfx1201, this wheel's target): "
                              "run the tools with -d ROCm0"),
    ("gfx1100", "gfx1201", 1, "verdict:  GPU 0 is a gfx1201: this wheel carries gfx1100 code: "
                              "pip install moshi-rocm-gfx1201"),
    ("gfx1100", "gfx1151", 1, "verdict:  GPU 0 is a gfx1151: this wheel carries gfx1100 code: "
                              "pip install moshi-rocm-gfx1151"),
    # Strix Point: rocBLAS 7.2.4 has no kernels for it, so no wheel exists to point at
    ("gfx1151", "gfx1150", 1, "verdict:  GPU 0 is a gfx1150: this wheel carries gfx1151 code, and there is no "
                              "moshi-rocm wheel for gfx1150 (Debian's rocBLAS 7.2 ships no kernels for gfx1150); "
                              "the tools run on the CPU with -d CPU"),
])
def test_verdict_for_one_gpu(tmp_path, site, wheel_target, gpu, code, expected):
    install_package(site, wheel_target)
    sysfs, dev = machine(tmp_path / "machine", [gpu])
    r = doctor(site, sysfs, dev)
    assert r.returncode == code, r.stderr
    assert verdict(r) == expected
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"wheel:    moshi-rocm-{wheel_target} 1.0.post0, code for {wheel_target} (Radeon")
    assert f"{dev}/kfd: ok (read/write)" in lines
    assert any(l.startswith(f"GPU 0:    {gpu} (Radeon") and f"(KFD node 1, device 0x{GPUS[gpu][1]:04x}), "
               f"{dev}/dri/renderD128: ok" in l for l in lines), lines


def test_override_already_set_makes_the_gpu_usable(tmp_path, site):
    install_package(site, "gfx1030")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1031"])
    r = doctor(site, sysfs, dev, override="10.3.0")
    assert r.returncode == 0
    assert verdict(r) == ("verdict:  this wheel fits GPU 0 (gfx1031, runs this wheel's gfx1030 code with "
                          "HSA_OVERRIDE_GFX_VERSION=10.3.0 (set)): run the tools with -d ROCm0")


def test_second_gpu_fits(tmp_path, site):
    install_package(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1030", "gfx1100"])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 0
    assert verdict(r).startswith("verdict:  this wheel fits GPU 1 (gfx1100")
    assert "-d ROCm1" in verdict(r)


def test_no_gpu(tmp_path, site):
    install_package(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", [])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 1
    assert "GPUs:     none (no GPU node in the KFD topology)" in r.stdout
    assert verdict(r) == "verdict:  no AMD GPU found: the tools run on the CPU only (-d CPU)"


def test_no_kfd_driver(tmp_path, site):
    install_package(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", [], kfd=None)
    r = doctor(site, sysfs, dev)
    assert r.returncode == 1
    assert f"{dev}/kfd: missing" in r.stdout
    assert (f"GPUs:     none (no KFD topology at {sysfs}/class/kfd/kfd/topology/nodes: the amdgpu kernel "
            "driver is not loaded (or /sys is not visible here))") in r.stdout
    assert verdict(r) == "verdict:  no AMD GPU found: the tools run on the CPU only (-d CPU)"


def test_kfd_missing_with_a_fitting_gpu(tmp_path, site):
    install_package(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"], kfd="missing")
    r = doctor(site, sysfs, dev)
    assert r.returncode == 1
    assert verdict(r) == f"verdict:  GPU 0 (gfx1100) fits this wheel, but {dev}/kfd is missing"


@pytest.mark.skipif(not IS_ROOT or not Path("/usr/bin/python3").exists(),
                    reason="needs root to create a device node and run as another user")
def test_kfd_not_accessible_for_this_user():
    """/dev/kfd mode 000: the user `nobody` may not open it (root always could)."""
    # A tree `nobody` can read (pytest's tmp_path is private to root); the system Python,
    # since a root-only interpreter would not even start.
    top = Path(tempfile.mkdtemp(prefix="moshi-doctor-"))
    try:
        top.chmod(0o755)
        site = top / "site"
        install_package(site, "gfx1100")
        sysfs, dev = machine(top / "machine", ["gfx1100"], kfd="no-access")
        for p in [top, *top.rglob("*")]:
            if not p.is_symlink() and not stat.S_ISCHR(p.lstat().st_mode):
                p.chmod(0o755 if p.is_dir() else 0o644)
        r = doctor(site, sysfs, dev, python="/usr/bin/python3", user=65534)
        assert r.returncode == 1, r.stderr
        reason = ("not readable and writable by this user (mode 000, group root); ask the administrator to "
                  "give the GPU users' group (usually render) read/write access")
        assert f"{dev}/kfd: {reason}" in r.stdout
        assert verdict(r) == f"verdict:  GPU 0 (gfx1100) fits this wheel, but {dev}/kfd is {reason}"
        # The same machine as root: usable.
        assert doctor(site, sysfs, dev).returncode == 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_gfx_names_from_kfd_numbers():
    d = template_module("kfd")
    assert [d.gfx_name(v) for v in (110000, 100300, 100301, 90010, 110501, 90012)] == \
        ["gfx1100", "gfx1030", "gfx1031", "gfx90a", "gfx1151", "gfx90c"]
    assert d.override_target("10.3.0") == "gfx1030" and d.override_target("11.0") is None
    assert d.override_target("\u00b2.0.0") is None      # a digit to str.isdigit(), not to int()
    # Every override in the builder's table names a target the same table knows.
    table = project.target_table_for_runtime()
    for name, entry in table.items():
        assert d.gfx_name(entry["gfx_target_version"]) == name
        if "runs_as" in entry:
            assert d.override_target(entry["hsa_override_gfx_version"]) == entry["runs_as"]


def test_info_and_selftest_dispatch(tmp_path, site):
    pkg = install_package(site, "gfx1100")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site)}
    run = lambda *a: subprocess.run([PYTHON, "-m", "moshi_rocm", *a], env=env, capture_output=True, text=True,
                                    timeout=60)
    info = run("info")
    assert info.returncode == 0
    assert info.stdout.splitlines()[0] == "moshi-rocm-gfx1100 1.0.post0 for gfx1100"
    assert "  ggml 0.25.3 (MIT)" in info.stdout and "  libamdhip64-6 6.4.3-5 (MIT): libamdhip64.so.6" in info.stdout
    assert f"ROCBLAS_TENSILE_LIBPATH: {pkg}/rocblas/library (set for the tools)" in info.stdout
    # selftest is another module: missing here, it fails clearly, not with a traceback.
    missing = run("selftest")
    assert missing.returncode == 127 and "selftest is not part of this build" in missing.stderr
    (pkg / "selftest.py").write_text("def main(argv):\n    print('selftest', argv)\n    return 5\n")
    present = run("selftest", "--quick")
    assert present.returncode == 5 and present.stdout == "selftest ['--quick']\n"
    # The old forms still work.
    assert run("--list").stdout.split() == ["fake-tool"]
    assert json.loads(run("--info").stdout)["gpu_target"] == "gfx1100"


# --------------------------------------------------------------------------- slow: the installed wheel

@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_doctor_from_the_installed_wheel_in_the_clean_root(installed_testapp_wheel):
    """`moshi-rocm doctor` of the pip-installed test application wheel, in the clean root: the chroot
    has no /sys or /dev mounted, so what the test lays out under ROOT/sys and ROOT/dev is the machine."""
    _, bindir, run, _, venv = installed_testapp_wheel
    root = venv.clean_root.root
    made = [root / "sys" / "class" / "kfd", root / "dev" / "kfd", root / "dev" / "dri"]
    assert not any(p.exists() for p in made), "the clean root already has KFD files: not ours to replace"
    moshi_rocm = str(bindir / "moshi-rocm")

    def lay_out(gpus, kfd="ok"):
        for p in made:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        machine(root, gpus, kfd=kfd)

    try:
        r = run([moshi_rocm, "doctor"])
        print(r.stdout, r.stderr)
        assert r.returncode == 1
        assert "/dev/kfd: missing" in r.stdout
        assert "GPUs:     none (no KFD topology at /sys/class/kfd/kfd/topology/nodes" in r.stdout

        lay_out(["gfx1100"])
        r = run([moshi_rocm, "doctor"])
        print(r.stdout, r.stderr)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "/dev/kfd: ok (read/write)" in r.stdout
        assert verdict(r) == ("verdict:  moshi-rocm-gfx1100 fits GPU 0 (gfx1100, its target): "
                              "run the tools with -d ROCm0")

        lay_out(["gfx1201"])
        r = run([moshi_rocm, "doctor"])
        assert r.returncode == 1
        assert verdict(r) == ("verdict:  GPU 0 is a gfx1201: the tools use gfx1100 code (moshi-rocm-gfx1100): "
                              "pip install moshi-rocm-gfx1201")

        lay_out([])
        r = run([moshi_rocm, "doctor"])
        assert r.returncode == 1
        assert verdict(r) == "verdict:  no AMD GPU found: the tools run on the CPU only (-d CPU)"

        # /dev/kfd mode 000, doctor run by `nobody` (root may open anything).
        lay_out(["gfx1100"], kfd="no-access")
        r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", moshi_rocm, "doctor"])
        print(r.stdout, r.stderr)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "/dev/kfd is not readable and writable by this user (mode 000, group root)" in verdict(r), verdict(r)
    finally:
        for p in made:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def test_info_lists_the_standin_as_such(tmp_path, site):
    info_lines = template_module("__main__").info_lines
    info = runtime_info("gfx1201")
    info["build"] = {"rocm_stack": "7.2", "hip_version": "7.2.53211", "clang_version": "22.1.8",
                     "rocblas_version": "5.2.0", "glibc_version": "2.41"}
    info["system_packages"].append({"package": "librocsolver0", "version": "7.2.4-1~exp1+moshibuild1",
                                    "license": "MIT", "libraries": ["librocsolver.so.0"]})
    info["standins"] = [{"package": "librocsolver0", "replaces": "rocSOLVER 7.2.4", "consumer": "libhipblas.so.3",
                         "return_value": 2, "symbols": ["rocsolver_sgetrf", "rocsolver_dgels"]}]
    lines = info_lines(info, tmp_path)
    assert "built with: ROCm stack 7.2 (HIP 7.2.53211, clang 22.1.8, rocBLAS 5.2.0, glibc 2.41)" in lines
    assert ("    a generated STAND-IN, not rocSOLVER 7.2.4: each of its 2 rocsolver_* functions returns 2 (not "
            "implemented); only libhipblas.so.3 links it, for functions the tools never call") in lines
    info["system_packages"].append({"package": "libz3-4", "version": "4.13.4-1+moshibuild1",
                                    "license": "MIT", "libraries": ["libz3.so.4"]})
    info["standins"].append({"package": "libz3-4", "replaces": "Z3, the SMT solver (libz3-4 4.13.4-1, libz3.so.4)",
                             "consumer": "libLLVM.so.22.1", "behaviour": "writes its name to stderr and aborts",
                             "symbols": ["Z3_mk_context", "Z3_del_context"]})
    lines = info_lines(info, tmp_path)
    assert ("    a generated STAND-IN, not Z3, the SMT solver (libz3-4 4.13.4-1, libz3.so.4): each of its 2 Z3_* "
            "functions writes its name to stderr and aborts; only libLLVM.so.22.1 links it, for functions "
            "the tools never call") in lines


# --------------------------------------------------------------------------- split wheels: base + targets

VERSION = "1.0.post0"
TOOL_ENV_SCRIPT = """#!/bin/sh
echo "override=${HSA_OVERRIDE_GFX_VERSION-unset}"
echo "backend=${GGML_BACKEND_PATH-unset}"
echo "kernels=${ROCBLAS_TENSILE_LIBPATH-unset}"
echo "ld=${LD_LIBRARY_PATH-unset}"
echo "args=$*"
"""


def base_runtime_info(version: str = VERSION) -> dict:
    """What the builder writes into the base wheel's _runtime.json (docs/WHEEL-PAIR.md)."""
    return {
        "kind": "base", "distribution": "moshi-rocm", "version": version, "package": "moshi_rocm",
        "tools": ["fake-tool"], "entry_points": {"fake_tool": "fake-tool"}, "bin_dir": "bin",
        "library_dirs": ["bin", "../moshi_rocm.libs"], "env": {},
        "launcher": {"device_flags": ["-d", "--device"], "device_aliases": [["HIP", "ROCm"]]},
        "components": [{"name": "ggml", "version": "0.25.3", "license": "MIT"}],
        "targets": project.target_table_for_runtime(KERNEL_TARGETS, "Debian's rocBLAS 7.2"),
        "system_packages": [{"package": "libamdhip64-7", "version": "7.2.1-1", "license": "MIT",
                             "libraries": ["libamdhip64.so.7"]}],
        "build": {}, "standins": [], "dlopen": [],
        "target_distribution": "moshi-rocm-{gpu_target}", "target_package": "moshi_rocm_{gpu_target}",
        "provides": ["libggml-base.so.0", "libamdhip64.so.7"],
    }


def install_base(site: Path, version: str = VERSION) -> Path:
    """The base wheel's package with a fake tool that prints the environment the launcher gave it."""
    pkg = site / "moshi_rocm"
    shutil.copytree(TEMPLATE_PKG, pkg, ignore=shutil.ignore_patterns("__pycache__", "selftest.py"))
    (pkg / "_runtime.json").write_text(json.dumps(base_runtime_info(version)))
    tool = pkg / "bin" / "fake-tool"
    tool.parent.mkdir()
    tool.write_text(TOOL_ENV_SCRIPT)
    tool.chmod(0o755)
    return pkg


def install_target(site: Path, target: str, version: str = VERSION) -> Path:
    """A target wheel's folder beside the base package: _target.json, the backend, the kernel folder."""
    folder = site / f"moshi_rocm_{target}"
    (folder / "rocblas" / "library").mkdir(parents=True)
    (folder / "libggml-hip.so").write_bytes(b"")
    (site / f"moshi_rocm_{target}.libs").mkdir()
    (folder / "_target.json").write_text(json.dumps({
        "kind": "target", "distribution": f"moshi-rocm-{target}", "version": version, "gpu_target": target,
        "base": "moshi-rocm", "requires": f"moshi-rocm=={version}", "backend": "libggml-hip.so",
        "env": {"ROCBLAS_TENSILE_LIBPATH": "rocblas/library"},
        "library_dirs": [".", f"../moshi_rocm_{target}.libs"],
        "components": [{"name": "rocBLAS", "version": "5.2.0", "license": "MIT"}],
        "system_packages": [{"package": "librocsolver0", "version": "7.2.4-1~exp1+moshibuild1", "license": "MIT",
                             "libraries": ["librocsolver.so.0"]}],
        "build": {"rocm_stack": "7.2", "hip_version": "7.2.53211", "clang_version": "22.1.8",
                  "rocblas_version": "5.2.0", "glibc_version": "2.41"},
        "standins": [{"package": "librocsolver0", "replaces": "rocSOLVER 7.2.4", "consumer": "libhipblas.so.3",
                      "return_value": 2, "symbols": ["rocsolver_sgetrf", "rocsolver_dgels"]}],
    }))
    return folder


def run_package(site: Path, *args: str, sysfs: Path | None = None, dev: Path | None = None,
                **extra: str) -> subprocess.CompletedProcess:
    """`python -m moshi_rocm ARGS` with this site on the path and the fake machine (if given)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site), **extra}
    if sysfs is not None:
        env.update(MOSHI_ROCM_SYSFS=str(sysfs), MOSHI_ROCM_DEV=str(dev))
    r = subprocess.run([PYTHON, "-m", "moshi_rocm", *args], env=env, capture_output=True, text=True,
                       timeout=60, cwd="/")
    print(r.stdout, r.stderr)
    return r


def tool_env(site: Path, sysfs: Path | None = None, dev: Path | None = None, **extra: str) -> dict:
    """The variables the fake tool saw, run through the launcher."""
    r = run_package(site, "fake-tool", "-d", "HIP0", sysfs=sysfs, dev=dev, **extra)
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines())


def test_one_target_installed_is_chosen_with_absolute_paths_inside_it(tmp_path, site):
    install_base(site)
    folder = install_target(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1201"])   # the only one installed wins, whatever the GPU
    seen = tool_env(site, sysfs, dev)
    backend, kernels = Path(seen["backend"]), Path(seen["kernels"])
    assert backend.is_absolute() and kernels.is_absolute()
    assert backend == folder.resolve() / "libggml-hip.so"
    assert kernels == folder.resolve() / "rocblas" / "library"
    assert backend.relative_to(folder.resolve()) and kernels.relative_to(folder.resolve())
    assert seen["ld"] == "unset"        # RUNPATHs do the work
    assert seen["args"] == "-d ROCm0"


def test_ld_library_path_gets_the_base_then_the_target_folders(tmp_path, site):
    pkg = install_base(site)
    folder = install_target(site, "gfx1100")
    seen = tool_env(site, LD_LIBRARY_PATH="/opt/rocm/lib")
    site_r = site.resolve()
    assert seen["ld"].split(os.pathsep) == [str(pkg.resolve() / "bin"), str(site_r / "moshi_rocm.libs"),
                                            str(folder.resolve()), str(site_r / "moshi_rocm_gfx1100.libs"),
                                            "/opt/rocm/lib"]


@pytest.mark.parametrize("installed, gpus, chosen", [
    (["gfx1100", "gfx1201"], ["gfx1201"], "gfx1201"),
    (["gfx1100", "gfx1201"], ["gfx1100"], "gfx1100"),
    (["gfx1030", "gfx1100"], ["gfx1031"], "gfx1030"),             # the table's runs_as
    (["gfx1100", "gfx1201"], ["gfx1150", "gfx1201"], "gfx1201"),  # the first GPU that has a wheel
    (["gfx1100", "gfx1201"], ["gfx1201", "gfx1100"], "gfx1201"),  # ... in GPU order
])
def test_several_installed_the_gpu_decides(tmp_path, site, installed, gpus, chosen):
    install_base(site)
    for t in installed:
        install_target(site, t)
    sysfs, dev = machine(tmp_path / "machine", gpus)
    seen = tool_env(site, sysfs, dev)
    assert seen["backend"] == str(site.resolve() / f"moshi_rocm_{chosen}" / "libggml-hip.so")
    assert seen["kernels"] == str(site.resolve() / f"moshi_rocm_{chosen}" / "rocblas" / "library")


def test_several_installed_hsa_override_decides(tmp_path, site):
    install_base(site)
    for t in ("gfx1030", "gfx1100"):
        install_target(site, t)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"])
    seen = tool_env(site, sysfs, dev, HSA_OVERRIDE_GFX_VERSION="10.3.0")
    assert seen["backend"] == str(site.resolve() / "moshi_rocm_gfx1030" / "libggml-hip.so")


def test_several_installed_none_fits_runs_on_the_cpu(tmp_path, site):
    install_base(site)
    for t in ("gfx1030", "gfx1100"):
        install_target(site, t)
    for gpus in (["gfx1201"], []):
        sysfs, dev = machine(tmp_path / f"machine{len(gpus)}", gpus)
        seen = tool_env(site, sysfs, dev)
        assert seen["backend"] == "unset" and seen["kernels"] == "unset"


def test_moshi_rocm_target_picks(tmp_path, site):
    install_base(site)
    for t in ("gfx1100", "gfx1201"):
        install_target(site, t)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1201"])
    seen = tool_env(site, sysfs, dev, MOSHI_ROCM_TARGET="gfx1100")
    assert seen["backend"] == str(site.resolve() / "moshi_rocm_gfx1100" / "libggml-hip.so")


def test_moshi_rocm_target_not_installed_names_the_wheel(tmp_path, site):
    install_base(site)
    install_target(site, "gfx1100")
    r = run_package(site, "fake-tool", MOSHI_ROCM_TARGET="gfx1030")
    assert r.returncode == 127 and r.stdout == ""
    assert "pip install moshi-rocm-gfx1030" in r.stderr
    assert r.stderr.startswith("fake-tool: MOSHI_ROCM_TARGET=gfx1030, but moshi-rocm-gfx1030 is not installed "
                               "(target wheels installed: gfx1100)")
    bad = run_package(site, "fake-tool", MOSHI_ROCM_TARGET="radeon")
    assert bad.returncode == 127 and "MOSHI_ROCM_TARGET=radeon is not a gfx target name" in bad.stderr


def test_version_mismatch_is_ignored_with_a_warning_when_it_would_be_chosen(tmp_path, site):
    install_base(site)
    install_target(site, "gfx1100", version="0.9")
    r = run_package(site, "fake-tool")
    assert r.returncode == 0
    assert "backend=unset" in r.stdout.splitlines()
    assert r.stderr == (f"moshi-rocm: warning: ignoring {site.resolve()}/moshi_rocm_gfx1100: moshi-rocm-gfx1100 0.9 "
                        f"does not match moshi-rocm {VERSION}: pip install moshi-rocm-gfx1100=={VERSION}\n")
    # Beside a matching one: silent while the GPU picks the matching one ...
    install_target(site, "gfx1201")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1201"])
    r = run_package(site, "fake-tool", sysfs=sysfs, dev=dev)
    assert r.stderr == "" and f"backend={site.resolve()}/moshi_rocm_gfx1201/libggml-hip.so" in r.stdout
    # ... a warning when the GPU would have picked it; the matching one is then the only one.
    sysfs, dev = machine(tmp_path / "machine2", ["gfx1100"])
    r = run_package(site, "fake-tool", sysfs=sysfs, dev=dev)
    assert "ignoring" in r.stderr and "moshi-rocm-gfx1100 0.9 does not match" in r.stderr
    assert f"backend={site.resolve()}/moshi_rocm_gfx1201/libggml-hip.so" in r.stdout
    # Named by MOSHI_ROCM_TARGET: an error.
    r = run_package(site, "fake-tool", MOSHI_ROCM_TARGET="gfx1100")
    assert r.returncode == 127 and f"pip install moshi-rocm-gfx1100=={VERSION}" in r.stderr


def test_broken_target_wheel_is_ignored(tmp_path, site):
    install_base(site)
    (install_target(site, "gfx1100") / "libggml-hip.so").unlink()
    r = run_package(site, "fake-tool")
    assert "backend=unset" in r.stdout.splitlines()
    assert "libggml-hip.so is missing: reinstall moshi-rocm-gfx1100" in r.stderr
    (site / "moshi_rocm_gfx1100" / "_target.json").write_text("{")
    r = run_package(site, "fake-tool")
    assert "backend=unset" in r.stdout.splitlines() and "cannot be read" in r.stderr


def test_base_only_runs_on_the_cpu(tmp_path, site):
    install_base(site)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"])
    seen = tool_env(site, sysfs, dev)
    assert seen["backend"] == "unset" and seen["kernels"] == "unset"


def test_self_contained_wheel_ignores_target_folders(tmp_path, site):
    """A wheel built before the split: env relative to its package, no target wheel looked for."""
    pkg = install_package(site, "gfx1100")
    tool = pkg / "bin" / "fake-tool"
    tool.parent.mkdir()
    tool.write_text(TOOL_ENV_SCRIPT)
    tool.chmod(0o755)
    install_target(site, "gfx1201", version="1.0.post0")
    seen = tool_env(site, MOSHI_ROCM_TARGET="gfx1030")
    assert seen["backend"] == "unset"
    assert seen["kernels"] == str(pkg / "rocblas" / "library")


@pytest.mark.parametrize("gpu, expected", [
    ("gfx1100", "GPU 0 is a gfx1100: no target wheel is installed for it, the tools run on the CPU: "
                "pip install moshi-rocm-gfx1100"),
    ("gfx1031", "GPU 0 is a gfx1031: no target wheel is installed for it, the tools run on the CPU; it runs "
                "gfx1030 code with HSA_OVERRIDE_GFX_VERSION=10.3.0: pip install moshi-rocm-gfx1030 and export "
                "HSA_OVERRIDE_GFX_VERSION=10.3.0"),
    ("gfx1150", "GPU 0 is a gfx1150: there is no moshi-rocm wheel for gfx1150 (Debian's rocBLAS 7.2 ships no "
                "kernels for gfx1150); the tools run on the CPU with -d CPU"),
])
def test_doctor_with_the_base_only_names_the_wheel_to_install(tmp_path, site, gpu, expected):
    install_base(site)
    sysfs, dev = machine(tmp_path / "machine", [gpu])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0] == (f"wheel:    moshi-rocm {VERSION}, the base wheel (the tools; their GPU code comes in a "
                        "target wheel)")
    assert lines[1] == "targets:  none installed: the tools run on the CPU"
    gpu_line = next(i for i, l in enumerate(lines) if l.startswith("GPU 0:"))
    assert lines[gpu_line + 1] == "          " + expected.split(": ", 1)[1]
    assert verdict(r) == "verdict:  " + expected


def test_doctor_with_the_base_only_names_a_wheel_per_gpu(tmp_path, site):
    install_base(site)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1150", "gfx1201"])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 1
    assert "          no target wheel is installed for it, the tools run on the CPU: pip install moshi-rocm-gfx1201" \
        in r.stdout.splitlines()
    # The GPU a wheel exists for is the one the verdict names.
    assert verdict(r) == ("verdict:  GPU 1 is a gfx1201: no target wheel is installed for it, the tools run on "
                          "the CPU: pip install moshi-rocm-gfx1201")


def test_doctor_with_the_base_only_and_an_override_set(tmp_path, site):
    install_base(site)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1031"])
    r = doctor(site, sysfs, dev, override="10.3.0")
    assert r.returncode == 1
    assert verdict(r) == ("verdict:  GPU 0 is a gfx1031: HSA_OVERRIDE_GFX_VERSION=10.3.0 is set, so it needs "
                          "gfx1030 code: pip install moshi-rocm-gfx1030")


def test_doctor_says_which_target_wheel_the_tools_use_and_that_it_fits(tmp_path, site):
    install_base(site)
    install_target(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith(f"target:   moshi-rocm-gfx1100 {VERSION}, code for gfx1100 (Radeon RX 7900")
    assert "tools:    use moshi-rocm-gfx1100 (the only target wheel installed)" in lines
    assert f"{dev}/kfd: ok (read/write)" in lines
    assert verdict(r) == ("verdict:  moshi-rocm-gfx1100 fits GPU 0 (gfx1100, its target): "
                          "run the tools with -d ROCm0")


def test_doctor_target_installed_but_another_gpu(tmp_path, site):
    install_base(site)
    install_target(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1201"])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 1
    assert verdict(r) == ("verdict:  GPU 0 is a gfx1201: the tools use gfx1100 code (moshi-rocm-gfx1100): "
                          "pip install moshi-rocm-gfx1201")


def test_doctor_target_needs_the_override_which_the_tools_set(tmp_path, site):
    install_base(site)
    install_target(site, "gfx1030")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1031"])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 0
    assert "setting:  HSA_OVERRIDE_GFX_VERSION=10.3.0: GPU 0 (gfx1031) runs the gfx1030 wheel's code " \
           "(MOSHI_ROCM_NO_OVERRIDE=1 turns this off)" in r.stdout.splitlines()
    assert verdict(r) == ("verdict:  moshi-rocm-gfx1030 fits GPU 0 (gfx1031, runs its gfx1030 code with "
                          "HSA_OVERRIDE_GFX_VERSION=10.3.0, which the tools set themselves): run the tools with -d ROCm0")
    r = doctor(site, sysfs, dev, override="10.3.0")
    assert r.returncode == 0
    assert verdict(r) == ("verdict:  moshi-rocm-gfx1030 fits GPU 0 (gfx1031, runs its gfx1030 code with "
                          "HSA_OVERRIDE_GFX_VERSION=10.3.0 (set)): run the tools with -d ROCm0")


# Fake KFD topologies for the automatic GPU setting (issue 22): the GPUs, the target wheels
# installed, and what the tool gets (HSA_OVERRIDE_GFX_VERSION) and what stderr says.
@pytest.mark.parametrize("gpus, installed, extra, override, says", [
    # a Radeon 780M alone with the gfx1100 wheel: set, said once
    (["gfx1103"], ["gfx1100"], {}, "11.0.0", "HSA_OVERRIDE_GFX_VERSION=11.0.0: GPU 0 (gfx1103) runs the gfx1100 "
                                             "wheel's code (MOSHI_ROCM_NO_OVERRIDE=1 turns this off)"),
    # 780M + RX 7900 XTX: both run gfx1100 code, so the one value fits both
    (["gfx1103", "gfx1100"], ["gfx1100"], {}, "11.0.0", "GPU 0 (gfx1103) runs the gfx1100 wheel's code"),
    (["gfx1100", "gfx1103"], ["gfx1100"], {}, "11.0.0", "GPU 1 (gfx1103) runs the gfx1100 wheel's code"),
    # RX 6700 XT with the gfx1030 wheel
    (["gfx1031"], ["gfx1030"], {}, "10.3.0", "HSA_OVERRIDE_GFX_VERSION=10.3.0: GPU 0 (gfx1031)"),
    # two families: 780M + RX 6700 XT with the gfx1100 wheel: not set, and why
    (["gfx1103", "gfx1031"], ["gfx1100"], {}, "unset",
     "not setting HSA_OVERRIDE_GFX_VERSION=11.0.0 for GPU 0 (gfx1103): GPU 1 (gfx1031) would then load gfx1100 "
     "code it cannot run; to use GPU 0, run with ROCR_VISIBLE_DEVICES=0 HSA_OVERRIDE_GFX_VERSION=11.0.0"),
    # the user's own value is left alone, and nothing is said
    (["gfx1103"], ["gfx1100"], {"HSA_OVERRIDE_GFX_VERSION": "11.0.2"}, "11.0.2", None),
    # turned off
    (["gfx1103"], ["gfx1100"], {"MOSHI_ROCM_NO_OVERRIDE": "1"}, "unset",
     "MOSHI_ROCM_NO_OVERRIDE=1: not setting HSA_OVERRIDE_GFX_VERSION=11.0.0"),
    # the GPU is the target itself: nothing to set or say
    (["gfx1100"], ["gfx1100"], {}, "unset", None),
    # no GPU: nothing
    ([], ["gfx1100"], {}, "unset", None),
])
def test_the_launcher_sets_the_gpu_setting_itself(tmp_path, site, gpus, installed, extra, override, says):
    install_base(site)
    for t in installed:
        install_target(site, t)
    sysfs, dev = machine(tmp_path / "machine", gpus)
    r = run_package(site, "fake-tool", sysfs=sysfs, dev=dev, **extra)
    assert r.returncode == 0, r.stderr
    seen = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert seen["override"] == override
    lines = r.stderr.splitlines()
    if says is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("moshi-rocm: ") and says in lines[0], lines


def test_doctor_with_moshi_rocm_target(tmp_path, site):
    install_base(site)
    for t in ("gfx1100", "gfx1201"):
        install_target(site, t)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1201"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site),
           "MOSHI_ROCM_SYSFS": str(sysfs), "MOSHI_ROCM_DEV": str(dev)}
    run = lambda target: subprocess.run([PYTHON, "-m", "moshi_rocm", "doctor"], capture_output=True, text=True,
                                        env={**env, "MOSHI_ROCM_TARGET": target}, timeout=60, cwd="/")
    r = run("gfx1100")
    print(r.stdout, r.stderr)
    assert r.returncode == 1
    assert "tools:    use moshi-rocm-gfx1100 (MOSHI_ROCM_TARGET=gfx1100)" in r.stdout.splitlines()
    assert verdict(r) == ("verdict:  GPU 0 is a gfx1201: the tools use gfx1100 code (moshi-rocm-gfx1100): "
                          "moshi-rocm-gfx1201 is installed, but the tools use moshi-rocm-gfx1100: "
                          "export MOSHI_ROCM_TARGET=gfx1201")
    r = run("gfx1030")
    print(r.stdout, r.stderr)
    assert r.returncode == 1
    assert verdict(r).startswith("verdict:  the tools cannot start: MOSHI_ROCM_TARGET=gfx1030, but "
                                 "moshi-rocm-gfx1030 is not installed")
    assert verdict(r).endswith("pip install moshi-rocm-gfx1030")
    # Without the variable, the GPU picks gfx1201.
    r = doctor(site, sysfs, dev)
    assert r.returncode == 0
    assert "tools:    use moshi-rocm-gfx1201 (GPU 0 is a gfx1201)" in r.stdout.splitlines()


def test_doctor_lists_a_mismatched_target_as_not_usable(tmp_path, site):
    install_base(site)
    install_target(site, "gfx1100", version="0.9")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"])
    r = doctor(site, sysfs, dev)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert any(l.startswith("target:   moshi-rocm-gfx1100 0.9, code for gfx1100") and
               l.endswith(f": NOT USABLE: moshi-rocm-gfx1100 0.9 does not match moshi-rocm {VERSION}: "
                          f"pip install moshi-rocm-gfx1100=={VERSION}") for l in lines), lines
    assert any(l.startswith("warning:  ignoring ") for l in lines)
    assert verdict(r) == (f"verdict:  GPU 0 is a gfx1100: its target wheel cannot be used, the tools run on "
                          f"the CPU: moshi-rocm-gfx1100 0.9 does not match moshi-rocm {VERSION}: "
                          f"pip install moshi-rocm-gfx1100=={VERSION}")


def test_info_lists_the_base_and_each_target(tmp_path, site):
    pkg = install_base(site)
    for t in ("gfx1100", "gfx1201"):
        install_target(site, t)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1201"])
    r = run_package(site, "info", sysfs=sysfs, dev=dev)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    site_r = site.resolve()
    assert lines[0] == f"moshi-rocm {VERSION}, the base wheel (GPU code: the target wheels below)"
    assert f"package:    {pkg.resolve()}" in lines
    assert "  ggml 0.25.3 (MIT)" in lines and "  libamdhip64-7 7.2.1-1 (MIT): libamdhip64.so.7" in lines
    at = lines.index("target wheels:")
    for t in ("gfx1100", "gfx1201"):
        i = lines.index(next(l for l in lines if l.startswith(f"  moshi-rocm-{t} {VERSION} for {t} (Radeon")))
        assert i > at
        block = lines[i:i + 14]
        assert f"    folder:     {site_r}/moshi_rocm_{t}" in block
        assert f"    backend:    {site_r}/moshi_rocm_{t}/libggml-hip.so (GGML_BACKEND_PATH for the tools)" in block
        assert (f"    ROCBLAS_TENSILE_LIBPATH: {site_r}/moshi_rocm_{t}/rocblas/library (set for the tools)"
                in block)
        assert "      rocBLAS 5.2.0 (MIT)" in block
        assert "      librocsolver0 7.2.4-1~exp1+moshibuild1 (MIT): librocsolver.so.0" in block
        assert any(l.startswith("        a generated STAND-IN, not rocSOLVER 7.2.4: each of its 2 rocsolver_* "
                                "functions returns 2") for l in block)
    assert lines[-1] == f"the tools:  run gfx1201 code (moshi-rocm-gfx1201 {VERSION}: GPU 0 is a gfx1201)"
    r = run_package(site, "info", MOSHI_ROCM_TARGET="gfx1100")
    assert r.stdout.splitlines()[-1] == (f"the tools:  run gfx1100 code (moshi-rocm-gfx1100 {VERSION}: "
                                         "MOSHI_ROCM_TARGET=gfx1100)")
    # The package's own view of it.
    code = ("import moshi_rocm; from moshi_rocm._launcher import code_summary, runtime_info; "
            "print(moshi_rocm.gpu_target, [t.gpu_target for t in moshi_rocm.target_wheels()]); "
            "print(code_summary(runtime_info()))")   # the heading of `moshi-rocm selftest`
    r = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd="/",
                       env={"PATH": os.environ["PATH"], "PYTHONPATH": str(site), "MOSHI_ROCM_SYSFS": str(sysfs),
                            "MOSHI_ROCM_DEV": str(dev)})
    assert r.stdout == ("gfx1201 ['gfx1100', 'gfx1201']\n"
                        f"with gfx1201 code (moshi-rocm-gfx1201 {VERSION}: GPU 0 is a gfx1201)\n"), r.stderr


def test_info_with_the_base_only(tmp_path, site):
    install_base(site)
    r = run_package(site, "info")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert ("target wheels: none installed: the tools run on the CPU (`moshi-rocm doctor` names the one for this "
            "machine's GPU)") in lines
    assert lines[-1] == "the tools:  run on the CPU only (no target wheel is installed)"
    r = run_package(site, "info", MOSHI_ROCM_TARGET="gfx1030")
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(
        "the tools:  cannot start: MOSHI_ROCM_TARGET=gfx1030, but moshi-rocm-gfx1030 is not installed")


def test_info_shows_the_upstream_commit_and_rocm_stack(tmp_path, site):
    main = template_module("__main__")
    info_lines, provenance_line = main.info_lines, main.provenance_line
    info = runtime_info("gfx1201")
    commit = "f1fabbd14a506076d4d0a9755811598220ee9e13"
    info["upstream"] = {"name": "moshi.cpp", "release": "0.0.0+f1fabbd", "commit": commit, "date": "2026-02-18"}
    info["build"] = {"rocm_stack": "7.2"}
    lines = info_lines(info, tmp_path)
    assert lines[1] == f"moshi.cpp {commit} (2026-02-18), ROCm stack 7.2"
    # the builder's line (README, release notes) is the same text
    from builder.package.project import provenance_line as builder_line
    assert builder_line(info["upstream"], "7.2") == lines[1]
    del info["upstream"], info["build"]
    assert provenance_line(info) == "" and not info_lines(info, tmp_path)[1].startswith("moshi.cpp")


def test_info_names_the_installed_sbom(tmp_path):
    info_lines = template_module("__main__").info_lines
    info = runtime_info("gfx1201")
    package = tmp_path / "moshi_rocm"
    package.mkdir()
    assert not any(line.startswith("sbom:") for line in info_lines(info, package))   # none installed
    sboms = tmp_path / f"moshi_rocm_gfx1201-{info['version']}.dist-info" / "sboms"
    sboms.mkdir(parents=True)
    (sboms / "moshi-build.cdx.json").write_text(json.dumps(
        {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "a"}, {"name": "b"}]}))
    (line,) = [line for line in info_lines(info, package) if line.startswith("sbom:")]
    assert line == f"sbom:       {sboms / 'moshi-build.cdx.json'} (CycloneDX 1.6, 2 components)"
    (sboms / "moshi-build.cdx.json").write_text("{not json")
    assert not any(line.startswith("sbom:") for line in info_lines(info, package))


# ------------------------------------------------------------------ hostile sysfs and variables (issue 24)

def test_kfd_properties_with_non_utf8_bytes_are_read_not_fatal(tmp_path, site):
    """K02/K06: sysfs is hostile input: bytes that are not UTF-8 are replaced, the node is still read,
    by doctor and by the launcher (which reads KFD to choose among two target wheels)."""
    install_package(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"])
    with open(sysfs / "class/kfd/kfd/topology/nodes/1/properties", "ab") as f:
        f.write(b"marketing_name \xff\xfe\xc3(\n")
    r = doctor(site, sysfs, dev)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert verdict(r).startswith("verdict:  this wheel fits GPU 0 (gfx1100")

    base_site = tmp_path / "split"
    install_base(base_site)
    for t in ("gfx1030", "gfx1100"):
        install_target(base_site, t)
    seen = tool_env(base_site, sysfs, dev)
    assert seen["backend"] == str(base_site.resolve() / "moshi_rocm_gfx1100" / "libggml-hip.so")


def test_kfd_properties_are_read_up_to_a_cap(tmp_path):
    d = template_module("kfd")
    path = tmp_path / "properties"
    path.write_bytes(b"gfx_target_version 110000\n" + b"junk 1\n" * (d.PROPERTIES_CAP // 7 + 10)
                     + b"device_id 29772\n")
    props = d.read_properties(str(path))
    assert props["gfx_target_version"] == "110000" and "device_id" not in props


def test_kfd_implausible_numbers_mean_an_unknown_target(tmp_path, site):
    """K04: negative and huge numbers are not a gfx target, a PCI id or a render minor."""
    install_package(site, "gfx1100")
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"])
    nodes = sysfs / "class/kfd/kfd/topology/nodes"
    for n, (v, minor, dev_id) in enumerate([(-110000, 10 ** 30, -1), (10 ** 30, -5, 10 ** 30)], start=2):
        (nodes / str(n)).mkdir()
        (nodes / str(n) / "properties").write_text(GPU_NODE.format(simds=192, version=v, device_id=dev_id,
                                                                   minor=minor))
    r = doctor(site, sysfs, dev)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "gfx-" not in r.stdout and "0x-" not in r.stdout and "renderD-" not in r.stdout
    assert "GPU 1:    unknown target (KFD node 2), no render node in the topology" in r.stdout
    assert "GPU 2:    unknown target (KFD node 3), no render node in the topology" in r.stdout
    assert verdict(r).startswith("verdict:  this wheel fits GPU 0 (gfx1100")
    d = template_module("kfd")
    assert [d._int(v, 0, 0xFFFF) for v in ("-1", "65536", "1" + "0" * 30, "--5", "\u0661\u0662", "29772")] == \
        [None, None, None, None, None, 29772]
    assert [d.plausible_gfx_version(v) for v in (110000, 90010, 0, -110000, 10 ** 30, 101600)] == \
        [True, True, False, False, False, False]
    assert [d.override_target(v) for v in ("9.0.10", "0.0.0", "11.0.16", "110.0.0")] == ["gfx90a", None, None, None]


def test_a_malformed_override_is_reported_and_ignored_as_the_launcher_does(tmp_path, site):
    """F13b: HSA_OVERRIDE_GFX_VERSION=².0.0 is no version: doctor says so in one line and judges as
    the launcher chooses (by the GPU: gfx1100), instead of asking to select the wheel already used."""
    install_base(site)
    for t in ("gfx1030", "gfx1100"):
        install_target(site, t)
    sysfs, dev = machine(tmp_path / "machine", ["gfx1100"])
    r = doctor(site, sysfs, dev, override="\u00b2.0.0")
    assert r.returncode == 0, r.stdout
    warned = [line for line in r.stdout.splitlines() if "HSA_OVERRIDE_GFX_VERSION" in line]
    assert warned == ["warning:  HSA_OVERRIDE_GFX_VERSION='\u00b2.0.0' is not a gfx version like 11.0.0 (three "
                      "numbers in ASCII digits): the tools' choice of GPU code ignores it, and ROCm may reject it: "
                      "unset it"]
    assert verdict(r) == "verdict:  moshi-rocm-gfx1100 fits GPU 0 (gfx1100, its target): run the tools with -d ROCm0"
    seen = tool_env(site, sysfs, dev, HSA_OVERRIDE_GFX_VERSION="\u00b2.0.0")
    assert seen["backend"] == str(site.resolve() / "moshi_rocm_gfx1100" / "libggml-hip.so")
    # a self-contained wheel: the same line, and the verdict of the GPU itself
    single = tmp_path / "single"
    install_package(single, "gfx1100")
    r = doctor(single, sysfs, dev, override="\u00b2.0.0")
    assert r.returncode == 0 and "is not a gfx version" in r.stdout
    assert verdict(r).startswith("verdict:  this wheel fits GPU 0 (gfx1100")
