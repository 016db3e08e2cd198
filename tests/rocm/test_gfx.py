"""builder/rocm/gfx.py: the one parser of gfx names, and the places that must agree with it."""

import json
import tomllib
from importlib import resources

import pytest

from builder.errors import TargetError
from builder.rocm import gfx, offload, targets


@pytest.mark.parametrize("name", ["gfx803", "gfx900", "gfx906", "gfx90a", "gfx90c", "gfx942", "gfx1010",
                                  "gfx1030", "gfx1100", "gfx1151", "gfx1201"])
def test_processor_names(name):
    assert gfx.is_gfx_name(name)
    assert not gfx.is_generic_isa(name)
    assert gfx.gfx_names_in(f"TensileLibrary_lazy_{name}.dat") == [name]


@pytest.mark.parametrize("text", ["", "gfx", "gfx1", "gfx11", "gfx11000", "gfx1100 ", "GFX1100", "gfxabc",
                                  "gfx90a:xnack-", "gfx90a-xnack+", "gfx11-generic", "sm_90", None, 1100])
def test_not_processor_names(text):
    assert not gfx.is_gfx_name(text)


@pytest.mark.parametrize("name", ["gfx9-generic", "gfx9-4-generic", "gfx10-1-generic", "gfx10-3-generic",
                                  "gfx11-generic", "gfx12-generic"])
def test_generic_isas(name):
    assert gfx.is_generic_isa(name) and not gfx.is_gfx_name(name)
    assert gfx.gfx_names_in(f"hipv4-amdgcn-amd-amdhsa--{name}") == [name]
    assert gfx.processors_in(f"hipv4-amdgcn-amd-amdhsa--{name}") == []


def test_gfx_version():
    assert gfx.gfx_version("gfx90a") == (9, 0, 10)
    assert gfx.gfx_version("gfx1151") == (11, 5, 1)
    assert gfx.gfx_version("gfx803") == (8, 0, 3)
    assert gfx.gfx_version("gfx11-generic") is None
    assert gfx.gfx_version("gfx1100x") is None


@pytest.mark.parametrize("text, names", [
    ("TensileLibrary_lazy_gfx1100.dat", ["gfx1100"]),
    ("Kernels.so-000-gfx1100.hsaco", ["gfx1100"]),
    ("TensileLibrary_Type_HH_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx90a-xnack-.co", ["gfx90a"]),
    ("TensileLibrary_lazy_gfx90a-xnack+.dat", ["gfx90a"]),
    ("TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback.dat", []),
    ("TensileManifest.txt", []),
    ("hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-", ["gfx90a"]),
    ("host-x86_64-unknown-linux-gnu-", []),
    ("a_gfx1100_and_gfx1030.co", ["gfx1100", "gfx1030"]),
    ("gfx11000.dat", []),           # no name runs into more digits or letters
    ("gfx1100x.dat", []),
])
def test_gfx_names_in_text(text, names):
    assert gfx.gfx_names_in(text) == names


def test_schemas_use_the_same_pattern():
    def patterns(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "pattern" and isinstance(v, str) and "gfx" in v:
                    yield v
                else:
                    yield from patterns(v)
        elif isinstance(node, list):
            for v in node:
                yield from patterns(v)

    for name in ("targets.schema.json", "stacks.schema.json"):
        schema = json.loads(resources.files("builder.resources").joinpath(name).read_text())
        found = list(patterns(schema))
        assert found and set(found) == {gfx.SCHEMA_PATTERN}, name


def test_packaged_names_parse():
    table = tomllib.loads(resources.files("builder.resources").joinpath("targets.toml").read_text())
    stacks = tomllib.loads(resources.files("builder.resources").joinpath("stacks.toml").read_text())
    names = [t["name"] for t in table["target"]]
    kernels = [n for s in stacks["stack"].values() for n in s["rocblas_targets"]]
    assert names and kernels and all(gfx.is_gfx_name(n) for n in names + kernels)


def test_targets_module_uses_it():
    assert targets.gfx_version("gfx90a") == gfx.gfx_version("gfx90a")
    with pytest.raises(TargetError, match="not a gfx target name"):
        targets.gfx_version("gfx11-generic")
    with pytest.raises(TargetError, match="not a gfx target name"):
        targets.parse_gpu_targets("gfx11-generic")
    assert targets.parse_gpu_targets("GFX1100;gfx90a") == ["gfx1100", "gfx90a"]


@pytest.mark.parametrize("entry_id, target", [
    ("hipv4-amdgcn-amd-amdhsa--gfx1100", "gfx1100"),
    ("hip-amdgcn-amd-amdhsa--gfx90a:xnack-", "gfx90a"),
    ("hipv4-amdgcn-amd-amdhsa--gfx90a:sramecc+:xnack-", "gfx90a"),
    ("hipv4-amdgcn-amd-amdhsa--gfx11-generic", "gfx11-generic"),
    ("hipv4-amdgcn-amd-amdhsa--gfx10-3-generic", "gfx10-3-generic"),
    ("host-x86_64-unknown-linux-gnu-", None),
])
def test_bundle_entry_ids(entry_id, target):
    assert offload.BundleEntry(entry_id, 1).gpu_target == target
