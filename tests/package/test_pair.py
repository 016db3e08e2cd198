"""The base wheel and a target wheel of a tiny payload, built for real (docs/WHEEL-PAIR.md).

The fake root gains libshared.so.1 (the "HIP runtime": shared by every target, staged into the
base wheel's bin/ under its SONAME) and libgpuonly.so.1 (a "rocBLAS": needed only by the target's
library, and itself loading libshared). The per-target step builds libtiny-gpu.so (the "backend"),
which links libtiny-core.so.1 of the base's prefix, libshared and libgpuonly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.common import wheel_reader as reader
from builder.check import compare
from builder.package import wheel
from builder.package.rules import parse_runtime_spec
from tests.helpers.elf import gcc
from tests.helpers.payload import RUNTIME_RULES, make_tiny_inputs

RULES = {**RUNTIME_RULES, "wheel": {**RUNTIME_RULES["wheel"], "base_distribution": "tiny-rocm",
                                    "project_urls": {"Homepage": "https://example.org/tiny",
                                                     "Issues": "https://example.org/tiny/issues"},
                                    "base_summary": "tiny base", "shared_runtime": ["libshared.so.*"]},
         # the per-target data folder is read by the target-only library
         "data_dir": [{**RUNTIME_RULES["data_dir"][0], "needed_by": "libgpuonly.so.*"}]}
GPU = "int core(void); int shared(void); int gpuonly(void);\nint gpu(void) { return core() + shared() + gpuonly(); }\n"


def tiny_pair_inputs(d: Path):
    """The tiny inputs with the pair's shared runtime, target-only library and per-target prefix."""
    tiny = make_tiny_inputs(d)
    shared = tiny.root.library("libshared.so.1", "int shared(void) { return 20; }\n")
    tiny.root.package("libshared1", "1.0-1", [shared, shared.with_name("libshared.so.1.0.0")])
    gpuonly = tiny.root.library("libgpuonly.so.1", "int shared(void);\nint gpuonly(void) { return 300 + shared(); }\n",
                                libs=(shared,))
    tiny.root.package("libgpuonly1", "5.0-1", [gpuonly, gpuonly.with_name("libgpuonly.so.1.0.0")])
    tiny.gpu_prefix = d / "gpu-prefix"
    gcc(tiny.gpu_prefix / "lib" / "libtiny-gpu.so", GPU, soname="libtiny-gpu.so", rpath=None,
        libs=(tiny.prefix / "lib" / "libtiny-core.so", shared, gpuonly), src_path=d / "gpu-src" / "gpu.c")
    return tiny


def build_pair(d: Path, rules: dict):
    """(base wheel, target wheel, tiny inputs) built with the runtime rules `rules`."""
    tiny = tiny_pair_inputs(d)
    spec = parse_runtime_spec(rules, "tiny-runtime.toml")
    tiny.common = dict(runtime_root=tiny.root.path, out_dir=d / "wheelhouse", version="1.0", build_number=2,
                       spec=spec, build_info={"stack": "test"}, echo=print)
    comps = [("tiny", "1.0", "MIT", [tiny.license])]
    base = wheel.build_wheel(kind="base", target=None, prefixes=tiny.prefixes, tools=["tiny-tool"],
                             components=comps, **tiny.common)
    target = wheel.build_wheel(kind="target", target="gfx1100", prefixes={"gpu": tiny.gpu_prefix}, tools=[],
                               components=comps, provides=wheel.provided_by(base),
                               **({"base_floor": wheel.floor_of(base)} if spec.glibc_floor else {}), **tiny.common)
    return base, target, tiny


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return build_pair(tmp_path_factory.mktemp("pair"), RULES)


def test_a_second_build_of_the_pair_gives_the_same_bytes(pair, tmp_path):
    """Reproducible wheels: the same prefixes, root and inputs, built again a second later into
    another folder (other work paths, other mtimes), give byte-identical base and target wheels,
    the target's grafts re-zipped by _link_grafts_to_base included."""
    base, target, tiny = pair
    common = {**tiny.common, "out_dir": tmp_path / "again"}
    umask = os.umask(0o002)     # another user's umask: auditwheel's folders would get another mode
    try:
        base2 = wheel.build_wheel(kind="base", target=None, prefixes=tiny.prefixes, tools=["tiny-tool"],
                                  components=[("tiny", "1.0", "MIT", [tiny.license])], **common)
        target2 = wheel.build_wheel(kind="target", target="gfx1100", prefixes={"gpu": tiny.gpu_prefix}, tools=[],
                                    components=[("tiny", "1.0", "MIT", [tiny.license])],
                                    provides=wheel.provided_by(base2), **common)
    finally:
        os.umask(umask)
    for first, second in ((base, base2), (target, target2)):
        result = compare.compare_wheels(first, second)
        assert result.identical, result.line()
    with zipfile.ZipFile(target2) as zf:   # stamped with the fallback epoch (no upstream date given)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_the_base_wheel_carries_the_shared_runtime_under_its_soname(pair):
    base, _, _ = pair
    assert base.name.startswith("tiny_rocm-1.0.post2-py3-none-manylinux")
    report = reader.inspect_wheel(base)
    assert "moshi_rocm/bin/libshared.so.1" in report.files
    assert not any("gpuonly" in m or "tiny-gpu" in m for m in report.files)
    with zipfile.ZipFile(base) as zf:
        info = json.loads(zf.read("moshi_rocm/_runtime.json"))
    assert info["kind"] == "base" and "gpu_target" not in info
    assert set(info["provides"]) == {"libshared.so.1", "libtiny-core.so.1"}
    assert info["target_distribution"] == "tiny-rocm-{gpu_target}"
    assert info["target_package"] == "moshi_rocm_{gpu_target}"


def test_the_target_wheel_holds_only_its_own_files_and_requires_the_base(pair):
    _, target, tiny = pair
    assert target.name.startswith("tiny_rocm_gfx1100-1.0.post2-py3-none-manylinux")
    report = reader.inspect_wheel(target)
    ours = [m for m in report.files if ".dist-info/" not in m]
    assert "moshi_rocm_gfx1100/libtiny-gpu.so" in ours and "moshi_rocm_gfx1100/_target.json" in ours
    assert all(m.startswith(("moshi_rocm_gfx1100/", "tiny_rocm_gfx1100.libs/")) for m in ours), ours
    grafted = [m for m in ours if m.startswith("tiny_rocm_gfx1100.libs/")]
    assert [Path(m).name.split("-")[0] for m in grafted] == ["libgpuonly"]      # not libshared, not libtiny-core
    gpu = report.elf["moshi_rocm_gfx1100/libtiny-gpu.so"]
    assert "$ORIGIN/../moshi_rocm/bin" in gpu.runpath
    assert "libtiny-core.so.1" in gpu.needed and "libshared.so.1" in gpu.needed
    # the graft that loads the base's libshared reaches the base's folder too
    assert "$ORIGIN/../moshi_rocm/bin" in report.elf[grafted[0]].runpath
    with zipfile.ZipFile(target) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        info = json.loads(zf.read("moshi_rocm_gfx1100/_target.json"))
        assert not any(n.endswith("entry_points.txt") for n in zf.namelist())
    assert "Requires-Dist: tiny-rocm==1.0.post2" in meta.splitlines()
    # runtime.toml [wheel.project_urls] point users somewhere, in the file's order
    urls = [line for line in meta.splitlines() if line.startswith("Project-URL: ")]
    assert urls[:2] == ["Project-URL: Homepage, https://example.org/tiny",
                        "Project-URL: Issues, https://example.org/tiny/issues"], urls
    assert info["kind"] == "target" and info["gpu_target"] == "gfx1100" and info["requires"] == "tiny-rocm==1.0.post2"
    assert info["backend"] == "libtiny-gpu.so"
    assert info["env"] == {"FOO_DATA": "foo/data"}
    assert {"moshi_rocm_gfx1100/foo/data/common.dat", "moshi_rocm_gfx1100/foo/data/kern_gfx1100.dat"} <= set(ours)
    assert "moshi_rocm_gfx1100/foo/data/kern_gfx1030.dat" not in ours


def test_both_unpacked_into_one_site_the_targets_library_loads_from_the_wheels_alone(pair, tmp_path):
    base, target, tiny = pair
    site = tmp_path / "site"
    for w in (base, target):
        with zipfile.ZipFile(w) as zf:
            for info in zf.infolist():
                zf.extract(info, site)
                mode = info.external_attr >> 16
                if mode:
                    os.chmod(site / info.filename, mode)
    hidden = tiny.root.path.with_name("root-away")     # nothing of the fake root may be used
    tiny.root.path.rename(hidden)
    try:
        code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); print(lib.gpu())")
        r = subprocess.run([sys.executable, "-c", code, str(site / "moshi_rocm_gfx1100" / "libtiny-gpu.so")],
                           capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(1 + 20 + 320)
        ldd = subprocess.run(["ldd", str(next((site / "tiny_rocm_gfx1100.libs").glob("libgpuonly*")))],
                             capture_output=True, text=True)
        resolved = dict(line.strip().split(" => ") for line in ldd.stdout.splitlines() if " => " in line)
        assert os.path.realpath(resolved["libshared.so.1"].split(" (")[0]) == str(site / "moshi_rocm/bin/libshared.so.1")
    finally:
        hidden.rename(tiny.root.path)


def test_both_wheels_carry_an_sbom_covering_their_elf_files(pair):
    from tests.package.test_wheel import sbom_of

    base, target, _ = pair
    for path, name in ((base, "tiny-rocm"), (target, "tiny-rocm-gfx1100")):
        doc, result = sbom_of(path)
        assert result.ok, result.line
        assert doc["metadata"]["component"]["name"] == name
    refs = {c["bom-ref"] for c in sbom_of(target)[0]["components"]}
    assert "generated:launcher" not in refs and "deb:libgpuonly1" in refs
    # the shared runtime in the base's bin/ is a system package of its own, its license shipped
    shared = next(c for c in sbom_of(base)[0]["components"] if c["bom-ref"] == "deb:libshared1")
    assert shared["version"] == "1.0-1" and shared["evidence"]["occurrences"] == [
        {"location": "moshi_rocm/bin/libshared.so.1"}]
    assert "tiny_rocm-1.0.post2.dist-info/licenses/LICENSES/system/libshared1/copyright" in zipfile.ZipFile(base).namelist()
