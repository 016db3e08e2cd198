import json
import time
from importlib import resources

import jsonschema
import pytest

from builder.rocm import targets
from builder.errors import TargetError


class FakeEnv:
    """Stands in for a BuildEnvironment / EnvSession: only the target sets."""

    rocblas_label = "Debian's rocBLAS 6.4"

    def __init__(self, compiler, kernels):
        self.compiler = set(compiler)
        self.kernels = set(kernels)
        self.calls = 0

    def supported_gpu_targets(self):
        self.calls += 1
        return set(self.compiler)

    def rocblas_kernel_targets(self):
        return set(self.kernels)


DEBIAN_KERNELS = {"gfx803", "gfx900", "gfx906", "gfx908", "gfx90a", "gfx1010", "gfx1030",
                  "gfx1100", "gfx1101", "gfx1102"}
CLANG_21 = DEBIAN_KERNELS | {"gfx942", "gfx950", "gfx1031", "gfx1032", "gfx1150", "gfx1151",
                             "gfx1200", "gfx1201", "gfx1103", "gfx600"}


@pytest.fixture
def env():
    return FakeEnv(CLANG_21, DEBIAN_KERNELS)


# -- the table ---------------------------------------------------------------------

def test_packaged_table_loads_and_knows_the_usual_targets():
    table = targets.load_targets()
    for name in ("gfx803", "gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx1010", "gfx1030",
                 "gfx1031", "gfx1032", "gfx1100", "gfx1101", "gfx1102", "gfx1150", "gfx1151",
                 "gfx1200", "gfx1201"):
        assert name in table, name
    assert table["gfx1100"].family == "rdna3"
    assert table["gfx1151"].family == "rdna3.5"
    assert table["gfx90a"].family == "cdna2"
    assert any("7900 XTX" in g for g in table["gfx1100"].gpus)
    assert any("Radeon VII" in g for g in table["gfx906"].gpus)


def test_kfd_gfx_target_versions():
    table = targets.load_targets()
    assert table["gfx1100"].gfx_target_version == 110000
    assert table["gfx1030"].gfx_target_version == 100300
    assert table["gfx90a"].gfx_target_version == 90010
    assert table["gfx942"].gfx_target_version == 90402
    assert table["gfx1151"].gfx_target_version == 110501


def test_hsa_override_aliases():
    table = targets.load_targets()
    for name in ("gfx1031", "gfx1032", "gfx1034", "gfx1035", "gfx1036"):
        assert (table[name].runs_as, table[name].hsa_override_gfx_version) == ("gfx1030", "10.3.0")
    for name in ("gfx1101", "gfx1102", "gfx1103"):
        assert (table[name].runs_as, table[name].hsa_override_gfx_version) == ("gfx1100", "11.0.0")
    assert table["gfx1100"].runs_as is None


def test_names_sort_naturally():
    names = targets.load_targets().names()
    assert names.index("gfx90a") < names.index("gfx942") < names.index("gfx1010") < names.index("gfx1100")


def test_gfx_version_parsing():
    assert targets.gfx_version("gfx90a") == (9, 0, 10)
    assert targets.gfx_version("gfx1151") == (11, 5, 1)
    with pytest.raises(TargetError):
        targets.gfx_version("sm_80")


def test_schema_itself_is_valid():
    schema = json.loads(resources.files("builder.resources").joinpath("targets.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


GOOD = """
schema_version = 1
[[target]]
name = "gfx1100"
family = "rdna3"
gpus = ["Radeon RX 7900 XTX"]
gfx_target_version = 110000
"""


def test_custom_table_loads(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(GOOD)
    assert targets.load_targets(p).names() == ["gfx1100"]


@pytest.mark.parametrize("bad, words", [
    (GOOD.replace('"rdna3"', '"rdna9"'), ["family"]),
    (GOOD.replace('gpus = ["Radeon RX 7900 XTX"]\n', ""), ["gpus"]),
    (GOOD.replace("gfx_target_version = 110000", "gfx_target_version = 110001"), ["expected 110000"]),
    (GOOD.replace('name = "gfx1100"', 'name = "navi31"'), ["name"]),
    (GOOD + 'colour = "red"\n', ["colour"]),
    (GOOD + GOOD.split("\n", 2)[2], ["twice"]),
    (GOOD + 'runs_as = { target = "gfx1030", hsa_override_gfx_version = "10.3.0" }\n', ["unknown target gfx1030"]),
    ("schema_version = 1\n[[target]\n", ["not valid TOML"]),
])
def test_bad_table_is_refused(tmp_path, bad, words):
    p = tmp_path / "bad.toml"
    p.write_text(bad)
    with pytest.raises(TargetError) as e:
        targets.load_targets(p)
    for w in words:
        assert w in str(e.value)


def test_wrong_override_version_is_refused(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(GOOD + """
[[target]]
name = "gfx1101"
family = "rdna3"
gpus = ["Radeon RX 7800 XT"]
gfx_target_version = 110001
runs_as = { target = "gfx1100", hsa_override_gfx_version = "11.0.1" }
""")
    with pytest.raises(TargetError, match="11.0.0"):
        targets.load_targets(p)


# -- parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["gfx1100;gfx1030", "gfx1100,gfx1030", "gfx1100 gfx1030",
                                  " gfx1100 ; gfx1030 ;", "GFX1100, gfx1030, gfx1100", "gfx1100\tgfx1030\n"])
def test_parse_gpu_targets(text):
    assert targets.parse_gpu_targets(text) == ["gfx1100", "gfx1030"]


def test_parse_keeps_order():
    assert targets.parse_gpu_targets("gfx90a;gfx1100;gfx90a;gfx803") == ["gfx90a", "gfx1100", "gfx803"]


@pytest.mark.parametrize("text", ["", "  ", ";", " , ; "])
def test_parse_empty_is_an_error(text):
    with pytest.raises(TargetError, match="no gfx target"):
        targets.parse_gpu_targets(text)


def test_parse_rejects_non_gfx_names():
    with pytest.raises(TargetError, match="'rx7900' is not a gfx target name"):
        targets.parse_gpu_targets("gfx1100;rx7900")


# -- checking ---------------------------------------------------------------------------

def test_supported_targets_pass(env):
    targets.check_targets(["gfx1100", "gfx1030", "gfx90a"], env)


def test_unknown_target(env):
    with pytest.raises(TargetError) as e:
        targets.check_targets(["gfx1100", "gfx9999"], env)
    msg = str(e.value)
    assert msg.startswith("unknown gfx target 'gfx9999'; known targets: gfx803 gfx900")
    assert "gfx1201" in msg


def test_target_without_rocblas_kernels(env):
    with pytest.raises(TargetError) as e:
        targets.check_targets(["gfx942"], env)
    assert str(e.value) == (
        "gfx942: Debian's rocBLAS 6.4 ships no kernels for it; targets this environment supports: "
        "gfx803 gfx900 gfx906 gfx908 gfx90a gfx1010 gfx1030 gfx1100 gfx1101 gfx1102"
    )


def test_target_the_compiler_cannot_do():
    env = FakeEnv({"gfx1100"}, {"gfx1100", "gfx1201"})
    with pytest.raises(TargetError, match="gfx1201: the compiler of this environment cannot"):
        targets.check_targets(["gfx1201"], env)


def test_unsupported_alias_target_mentions_override(env):
    with pytest.raises(TargetError) as e:
        targets.check_targets(["gfx1031"], env)
    assert "HSA_OVERRIDE_GFX_VERSION=10.3.0" in str(e.value)
    assert "gfx1030" in str(e.value)


def test_label_falls_back_for_plain_objects():
    class Plain:
        def supported_gpu_targets(self):
            return {"gfx1100"}

        def rocblas_kernel_targets(self):
            return set()

    with pytest.raises(TargetError, match="this environment's rocBLAS ships no kernels"):
        targets.check_targets(["gfx1100"], Plain())


def test_check_is_fast(env):
    start = time.monotonic()
    for _ in range(100):
        targets.check_targets(["gfx1100", "gfx1030"], env)
    assert time.monotonic() - start < 5


def test_buildable_targets(env):
    assert targets.buildable_targets(env) == ["gfx803", "gfx900", "gfx906", "gfx908", "gfx90a",
                                              "gfx1010", "gfx1030", "gfx1100", "gfx1101", "gfx1102"]


# -- table and families -------------------------------------------------------------

def test_targets_table(env):
    rows = {r.target: r for r in targets.targets_table(env)}
    assert rows["gfx1100"].kernels is True and rows["gfx1100"].compiler is True
    assert rows["gfx1100"].buildable is True
    assert rows["gfx942"].kernels is False and rows["gfx942"].compiler is True
    assert rows["gfx942"].buildable is False
    assert rows["gfx1032"].runs_as == "gfx1030"
    assert list(rows) == targets.load_targets().names()


def test_targets_table_without_environment():
    rows = targets.targets_table(None)
    assert all(r.kernels is None and r.buildable is None for r in rows)


def test_targets_in_family():
    assert targets.targets_in_family("rdna3") == ["gfx1100", "gfx1101", "gfx1102", "gfx1103"]
    assert targets.targets_in_family("rdna3.5") == ["gfx1150", "gfx1151", "gfx1152"]
    assert targets.targets_in_family("RDNA4") == ["gfx1200", "gfx1201"]
    assert targets.targets_in_family("cdna3") == ["gfx942"]


def test_unknown_family():
    with pytest.raises(TargetError, match="unknown GPU family .rdna9.; families: gcn4, gcn5, cdna1"):
        targets.targets_in_family("rdna9")
