"""builder/rocm/rocblas.py and resources/rocblas.toml: the builder's rocBLAS facts."""

import subprocess
import tomllib
from importlib import resources as importlib_resources
from pathlib import Path

import pytest

from builder.common import resources
from builder.envs import base
from builder.package import linkage, rules
from builder.rocm import rocblas

# A Tensile kernel folder: kernels for gfx1100, gfx1030 and gfx90a (two xnack variants),
# only fallback kernels for gfx803, and files for every target.
TENSILE = [
    "TensileLibrary_lazy_gfx1100.dat",
    "Kernels.so-000-gfx1100.hsaco",
    "TensileLibrary_Type_HH_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx1100.co",
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback_gfx1100.hsaco",
    "TensileLibrary_lazy_gfx1030.dat",
    "Kernels.so-000-gfx1030.hsaco",
    "TensileLibrary_lazy_gfx90a-xnack+.dat",
    "TensileLibrary_Type_HH_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx90a-xnack-.co",
    "Kernels.so-000-gfx90a-xnack+.hsaco",
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback_gfx803.hsaco",
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback.dat",
    "TensileLibrary_Type_HH_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback.dat",
    "TensileManifest.txt",
]
ANY_TARGET = [
    "TensileLibrary_Type_HH_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback.dat",
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback.dat",
    "TensileManifest.txt",
]

VERSION_H = """\
#ifndef ROCBLAS_VERSION_H_
#define ROCBLAS_VERSION_H_
#define ROCBLAS_VERSION_MAJOR       4
#define ROCBLAS_VERSION_MINOR       4
#define ROCBLAS_VERSION_PATCH       1
#define ROCBLAS_VERSION_TWEAK       d5c8b2e3
#endif
"""


def tensile_folder(path: Path, names=TENSILE) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        (path / name).write_bytes(b"")
    return path


def version_header(include: Path, text: str = VERSION_H) -> Path:
    header = include / "rocblas" / "internal" / "rocblas-version.h"
    header.parent.mkdir(parents=True, exist_ok=True)
    header.write_text(text)
    return header


# -- the data --------------------------------------------------------------------------------

def test_facts_load_and_validate():
    data = resources.load("rocblas")
    facts = rocblas.facts()
    assert facts.name == data["name"] == "rocBLAS"
    assert rocblas.soname() == "librocblas.so.*"
    assert facts.wheel_env == "ROCBLAS_TENSILE_LIBPATH"
    assert "lib/*/rocblas/*/library" in facts.search_in_prefix
    assert facts.search_next_to_library == ("rocblas/*/library", "rocblas/library", "../../Tensile/library")


def test_bad_data_is_refused():
    data = resources.load("rocblas")
    data["wheel"]["env"] = "lower case"
    with pytest.raises(Exception, match="wheel.env"):
        resources.validate(data, "rocblas", "x.toml")
    data = resources.load("rocblas")
    del data["tensile"]["in_prefix"]
    with pytest.raises(Exception, match="in_prefix"):
        resources.validate(data, "rocblas", "x.toml")
    data = resources.load("rocblas")
    data["tensile"]["next_to_library"] = ["/usr/lib/rocblas/library"]   # relative only
    with pytest.raises(Exception, match="next_to_library"):
        resources.validate(data, "rocblas", "x.toml")


# -- the wheel's kernel folder: a built-in data folder of the runtime rules ------------------

def test_runtime_spec_carries_the_kernel_folder_rule():
    spec = rules.load_runtime_spec()
    kernels = [r for r in spec.data_dirs if r.env == "ROCBLAS_TENSILE_LIBPATH"]
    assert kernels == [rules.DataDirRule(
        "rocBLAS Tensile kernels", "librocblas.so.*", ("rocblas/*/library", "rocblas/library", "../../Tensile/library"),
        "rocblas/library", "gpu_target", "ROCBLAS_TENSILE_LIBPATH")]
    # runtime.toml itself no longer lists it: rocblas.toml is its one home
    data = tomllib.loads(importlib_resources.files("builder.resources").joinpath("runtime.toml").read_text())
    assert not any("rocblas" in str(d).lower() for d in data.get("data_dir", ()))


def test_runtime_files_data_dirs_add_to_or_replace_the_built_in_one():
    data = tomllib.loads(importlib_resources.files("builder.resources").joinpath("runtime.toml").read_text())
    data["data_dir"] = [{"name": "model files", "needed_by": "libfoo.so.*", "search": ["foo"], "into": "foo"}]
    spec = rules.parse_runtime_spec(data, "x.toml")
    assert [r.name for r in spec.data_dirs] == ["rocBLAS Tensile kernels", "model files"]
    assert spec.data_dirs[1].select is None and spec.data_dirs[1].env is None
    data["data_dir"] = [{"name": "rocBLAS Tensile kernels", "needed_by": "librocblas.so.*",
                         "search": ["elsewhere/library"], "into": "rocblas/library"}]
    spec = rules.parse_runtime_spec(data, "x.toml")
    assert [(r.name, r.search) for r in spec.data_dirs] == [("rocBLAS Tensile kernels", ("elsewhere/library",))]


def test_kernel_folder_next_to_the_library(tmp_path):
    rule = rules.DataDirRule(**rocblas.kernel_folder_rule())
    debian = tmp_path / "debian/usr/lib/x86_64-linux-gnu"
    tensile_folder(debian / "rocblas/4.4.1/library")
    assert linkage.find_data_dir(rule, debian / "librocblas.so.4") == debian / "rocblas/4.4.1/library"
    upstream = tmp_path / "upstream/opt/rocm/lib"
    tensile_folder(upstream / "rocblas/library")
    assert linkage.find_data_dir(rule, upstream / "librocblas.so.4") == upstream / "rocblas/library"
    old = tmp_path / "old/opt/rocm/rocblas/lib"
    tensile_folder(tmp_path / "old/opt/rocm/Tensile/library")
    old.mkdir(parents=True)
    assert linkage.find_data_dir(rule, old / "librocblas.so.0") == tmp_path / "old/opt/rocm/Tensile/library"
    (debian / "rocblas/4.3.0/library").mkdir(parents=True)
    with pytest.raises(Exception, match="more than one version"):
        linkage.find_data_dir(rule, debian / "librocblas.so.4")


# -- file names -------------------------------------------------------------------------------

def test_kernel_targets_leave_fallback_only_targets_out(tmp_path):
    folder = tensile_folder(tmp_path / "library")
    assert rocblas.kernel_targets(TENSILE) == {"gfx1100", "gfx1030", "gfx90a"}
    assert rocblas.kernel_targets_in(folder) == {"gfx1100", "gfx1030", "gfx90a"}
    assert rocblas.kernel_targets_in(tmp_path / "missing") == set()
    # every gfx name, fallback files included: what a wheel can be made for
    assert rocblas.targets_in_names(TENSILE) == {"gfx1100", "gfx1030", "gfx90a", "gfx803"}


def test_kernel_targets_from_file_names(tmp_path):
    folder = tensile_folder(tmp_path, ["Kernels.so-000-gfx90a-xnack+.hsaco", "Kernels.so-000-gfx90a-xnack-.hsaco",
                                       "TensileLibrary_lazy_gfx1100.dat", "TensileLibrary_Type_HH_gfx1030.co",
                                       "TensileLibrary_Type_ZZ_Contraction_l_Alik_Bljk_Cijk_Dijk_fallback.dat"])
    assert rocblas.kernel_targets_in(folder) == {"gfx90a", "gfx1100", "gfx1030"}


def test_select_target_files_keeps_the_target_and_the_arch_independent_files():
    assert rocblas.select_target_files(TENSILE, "gfx1100") == sorted(ANY_TARGET + TENSILE[:4])
    assert rocblas.select_target_files(TENSILE, "gfx90a") == sorted(ANY_TARGET + TENSILE[6:9])
    assert rocblas.select_target_files(TENSILE, "gfx803") == sorted(ANY_TARGET + [TENSILE[9]])
    assert rocblas.select_target_files(TENSILE, "gfx942") == sorted(ANY_TARGET)
    # relative paths in subfolders are judged by the whole path
    assert rocblas.select_target_files(["sub/TensileLibrary_lazy_gfx1101.dat", "sub/x.dat"], "gfx1100") \
        == ["sub/x.dat"]


def test_select_target_files_as_before():
    names = [
        "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback.dat",
        "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx1100.co",
        "TensileLibrary_lazy_gfx1100.dat",
        "TensileLibrary_lazy_gfx1101.dat",
        "Kernels.so-000-gfx1030.hsaco",
        "TensileLibrary_lazy_gfx90a-xnack+.dat",
        "TensileLibrary_lazy_gfx90a.dat",
    ]
    assert rocblas.select_target_files(names, "gfx1100") == sorted(names[:3])
    assert rocblas.select_target_files(names, "gfx90a") == sorted([names[0], names[5], names[6]])
    assert rocblas.targets_in_names(names) == {"gfx1100", "gfx1101", "gfx1030", "gfx90a"}


def test_code_object_files():
    code = [n for n in TENSILE if rocblas.is_code_object_file(n)]
    assert code == [n for n in TENSILE if n.endswith((".co", ".hsaco"))] and len(code) == 7
    assert [n for n in TENSILE if rocblas.is_bundle_file(n)] == [TENSILE[2], TENSILE[7]]
    assert not rocblas.is_code_object_file("TensileLibrary_lazy_gfx1100.dat")


def test_own_and_foreign_files():
    assert rocblas.is_target_file("TensileLibrary_lazy_gfx90a-xnack+.dat", "gfx90a")
    assert not rocblas.is_target_file("TensileManifest.txt", "gfx90a")
    assert rocblas.foreign_targets("TensileLibrary_lazy_gfx1030.dat", "gfx1100") == ["gfx1030"]
    assert rocblas.foreign_targets("TensileLibrary_lazy_gfx1100.dat", "gfx1100") == []
    assert rocblas.foreign_targets("TensileLibrary_fallback.dat", "gfx1100") == []
    # a generic ISA's file is another target's, not arch-independent
    assert rocblas.foreign_targets("Kernels.so-000-gfx11-generic.hsaco", "gfx1100") == ["gfx11-generic"]
    assert rocblas.select_target_files(["Kernels.so-000-gfx11-generic.hsaco"], "gfx1100") == []


# -- an installation's kernel folder (the environments' probes) -------------------------------

def test_find_kernel_folder_debian_layout(tmp_path):
    lib = tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "rocblas" / "4.4.1" / "library"
    lib.mkdir(parents=True)
    assert rocblas.find_kernel_folder([tmp_path / "usr"]) == lib


def test_find_kernel_folder_upstream_newest_and_first_prefix(tmp_path):
    rocm, usr = tmp_path / "opt/rocm", tmp_path / "usr"
    assert rocblas.find_kernel_folder([rocm, usr]) is None
    for v in ("4.3.0", "4.4.1"):
        (usr / f"lib/x86_64-linux-gnu/rocblas/{v}/library").mkdir(parents=True)
    assert rocblas.find_kernel_folder([rocm, usr]) == usr / "lib/x86_64-linux-gnu/rocblas/4.4.1/library"
    (rocm / "lib/rocblas/library").mkdir(parents=True)
    assert rocblas.find_kernel_folder([rocm, usr]) == rocm / "lib/rocblas/library"
    (tmp_path / "lib64only/lib64/rocblas").mkdir(parents=True)
    (tmp_path / "lib64only/lib64/rocblas/library").write_text("a file, not a folder")
    assert rocblas.find_kernel_folder([tmp_path / "lib64only"]) is None


def test_header_version(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert rocblas.header_version([first, second]) is None
    version_header(second)
    assert rocblas.header_version([first, second]) == "4.4.1"
    version_header(first, "#define ROCBLAS_VERSION_MAJOR 5\n#define ROCBLAS_VERSION_MINOR 1\n")   # no patch
    assert rocblas.header_version([first, second]) == "4.4.1"
    version_header(first, VERSION_H.replace("MAJOR       4", "MAJOR 5").replace("MINOR       4", "MINOR 0"))
    assert rocblas.header_version([first, second]) == "5.0.1"


def test_probe_reads_an_installation_through_rocblas(tmp_path):
    tensile_folder(tmp_path / "opt/rocm/lib/rocblas/library")
    version_header(tmp_path / "opt/rocm/include")

    def run(argv):   # no tool runs: hipconfig's answers fall back to their defaults
        return subprocess.CompletedProcess(argv, 1, "", "")

    info = base.probe(run, tmp_path)
    assert info["rocm_path"] == "/opt/rocm"
    assert info["rocblas_library"] == "/opt/rocm/lib/rocblas/library"
    assert info["rocblas_kernel_targets"] == ["gfx1030", "gfx1100", "gfx90a"]
    assert info["rocblas_version"] == "4.4.1"
    empty = base.probe(run, tmp_path / "nothing")
    assert (empty["rocblas_library"], empty["rocblas_kernel_targets"], empty["rocblas_version"]) == (None, [], None)


# -- names in messages ------------------------------------------------------------------------

def test_labels():
    assert rocblas.label("4.4.1") == "rocBLAS 4.4.1"
    assert rocblas.label(None) == rocblas.label() == "this environment's rocBLAS"
    assert rocblas.stack_label("7.2") == "rocBLAS of ROCm stack 7.2"

    class Plain:
        pass

    class Labelled:
        rocblas_label = "Debian's rocBLAS 6.4"

    assert rocblas.label_of(Plain()) == "this environment's rocBLAS"
    assert rocblas.label_of(Labelled()) == "Debian's rocBLAS 6.4"


@pytest.mark.parametrize("packages, label", [
    ({"librocblas5": "7.2.4-1~exp1", "librocblas-dev": "7.2.4-1~exp1", "libc6": "2.41-12"}, "Debian's rocBLAS 7.2"),
    ({"librocblas4": "6.4.4-4"}, "Debian's rocBLAS 6.4"),
    ({"librocblas-dev": "6.4.4+dfsg-1"}, "Debian's rocBLAS 6.4"),
    ({"librocblas4": "not-a-version"}, "Debian's rocBLAS not-a-version"),
    ({"libc6": "2.41-12"}, "Debian's rocBLAS"),
    ({}, "Debian's rocBLAS"),
])
def test_debian_label(packages, label):
    assert rocblas.debian_label(packages) == label


# -- other data that names rocBLAS must agree ---------------------------------------------------

def test_verify_checks_the_fat_binarys_device_code():
    verify = tomllib.loads(importlib_resources.files("builder.resources").joinpath("verify.toml").read_text())
    assert rocblas.soname() in verify["device_code"]["libraries"]
