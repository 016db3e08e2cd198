"""moshi-rocm doctor: the verdict for a machine, read from fake KFD topologies in the real format.

Fast tests run the wheel's package (wheels/src/moshi_rocm, with a _runtime.json
holding the target table the builder writes) as `python -m moshi_rocm doctor`
against sysfs and /dev trees laid out in tmp_path (MOSHI_ROCM_SYSFS,
MOSHI_ROCM_DEV), with Python 3.8 where this machine has it. The slow test runs
the installed test application's wheel in the clean root filesystem, where the
files written under ROOT/sys and ROOT/dev are what the tool sees.
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
    """The package promises Python 3.8: run it with a working python3.8 where the machine has one
    (MOSHI_ROCM_TEST_PYTHON names another interpreter)."""
    chosen = os.environ.get("MOSHI_ROCM_TEST_PYTHON")
    if chosen:
        return chosen
    candidate = shutil.which("python3.8")
    if candidate:
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"],
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
}
# The ROCm 7.2 stack's rocBLAS kernel targets (stacks.toml): the wheels that can exist.
KERNEL_TARGETS = ["gfx803", "gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx1010", "gfx1030", "gfx1100",
                  "gfx1101", "gfx1102", "gfx1151", "gfx1200", "gfx1201"]


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
    sys.path.insert(0, str(TEMPLATE_PKG.parent))
    try:
        from moshi_rocm import doctor as d
    finally:
        sys.path.remove(str(TEMPLATE_PKG.parent))
    assert [d.gfx_name(v) for v in (110000, 100300, 100301, 90010, 110501, 90012)] == \
        ["gfx1100", "gfx1030", "gfx1031", "gfx90a", "gfx1151", "gfx90c"]
    assert d.override_target("10.3.0") == "gfx1030" and d.override_target("11.0") is None
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
        assert verdict(r) == ("verdict:  this wheel fits GPU 0 (gfx1100, this wheel's target): "
                              "run the tools with -d ROCm0")

        lay_out(["gfx1031"])
        r = run([moshi_rocm, "doctor"])
        assert r.returncode == 1
        assert verdict(r) == ("verdict:  GPU 0 is a gfx1031: this wheel carries gfx1100 code: pip install "
                              "moshi-rocm-gfx1030 and export HSA_OVERRIDE_GFX_VERSION=10.3.0")

        lay_out([])
        r = run([moshi_rocm, "doctor"])
        assert r.returncode == 1
        assert verdict(r) == "verdict:  no AMD GPU found: the tools run on the CPU only (-d CPU)"

        # /dev/kfd mode 000, doctor run by `nobody` (root may open anything).
        lay_out(["gfx1100"], kfd="no-access")
        r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", moshi_rocm, "doctor"])
        print(r.stdout, r.stderr)
        assert r.returncode == 1, r.stdout + r.stderr
        assert verdict(r).startswith("verdict:  GPU 0 (gfx1100) fits this wheel, but /dev/kfd is not readable "
                                     "and writable by this user (mode 000, group root)")
    finally:
        for p in made:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def test_info_lists_the_standin_as_such(tmp_path, site):
    sys.path.insert(0, str(TEMPLATE_PKG.parent))
    try:
        from moshi_rocm.__main__ import info_lines
    finally:
        sys.path.remove(str(TEMPLATE_PKG.parent))
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
