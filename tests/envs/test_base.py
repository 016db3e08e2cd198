"""What every build environment's probes read (builder/envs/base.py)."""


import pytest

from builder.envs import base
from builder.errors import ToolchainError


def test_parse_hip_version():
    assert str(base.parse_hip_version("6.4.43484-9999")) == "6.4.43484"
    assert str(base.parse_hip_version("5.2.21153-")) == "5.2.21153"
    with pytest.raises(ToolchainError):
        base.parse_hip_version("HIP")


def test_parse_supported_cpus_clang_and_llc():
    clang = "Available CPUs for this target:\n\n\tgfx1010\n\tgfx10-3-generic\n\tgfx90a\n\ttahiti\n\nUse -mcpu"
    assert base.parse_supported_cpus(clang) == {"gfx1010", "gfx90a"}
    llc = "Available CPUs for this target:\n\n  gfx1100    - Select the gfx1100 processor.\n  gfx942 - x\n"
    assert base.parse_supported_cpus(llc) == {"gfx1100", "gfx942"}

