"""verify's glibc-floor check (builder/check/checks/glibc_floor.py) on a real pair built with a floor.

The tiny pair of tests/package/test_pair.py, built from files compiled on this machine
(glibc 2.36) with runtime.toml's [glibc_floor] (no private library: the tiny tools are C):
both wheels carry manylinux_2_31 and pass; the base wheel with one definition taken out of
its compatibility library fails, naming what is no longer met.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from builder.check import verify
from builder.package import rules
from tests.helpers.elf import HAVE_GCC
from tests.package.test_pair import RULES, build_pair

pytestmark = pytest.mark.skipif(not HAVE_GCC, reason="needs gcc")
FLOOR = rules.load_runtime_spec().glibc_floor
COMPAT = FLOOR.compat_soname
FLOOR_RULES = {**RULES, "glibc_floor": {**{k: v for k, v in FLOOR.to_json().items() if k != "private"}, "private": []}}


@pytest.fixture(scope="module")
def floor_pair(tmp_path_factory):
    base, target, tiny = build_pair(tmp_path_factory.mktemp("floor-pair"), FLOOR_RULES)
    return base, target, tiny.common["spec"]


def results(path: Path, spec, **kw) -> dict:
    report = verify.verify_wheel(path, spec=spec, **kw)
    return {c.name: c for c in report.checks}


def test_both_wheels_carry_the_floors_tag_and_pass(floor_pair):
    base, target, spec = floor_pair
    for path in (base, target):
        assert path.name.endswith("-py3-none-manylinux_2_31_x86_64.whl"), path.name
    for path, kw in ((base, {}), (target, {"base": base})):
        checks = results(path, spec, **kw)
        assert checks["glibc-floor"].ok, checks["glibc-floor"].line
        assert checks["glibc-floor"].line.startswith("PASS glibc-floor: manylinux_2_31_x86_64: ")
        assert checks["manylinux"].ok, checks["manylinux"].line
    with zipfile.ZipFile(base) as zf:
        info = json.loads(zf.read("moshi_rocm/_runtime.json"))
        assert f"moshi_rocm/bin/{COMPAT}" in zf.namelist()
    record = info["glibc_floor"]
    assert record["version"] == "2.31" and "moshi_compat_start_main" in record["compat"]["symbols"]
    assert any(s.get("role") == "glibc-compat" for s in info["standins"])
    assert any(p["package"] == "moshi-glibc-compat" for p in info["system_packages"])


def test_the_lowered_tool_runs_here_from_the_unpacked_base(floor_pair, tmp_path):
    base, _, _ = floor_pair
    with zipfile.ZipFile(base) as zf:
        for info in zf.infolist():
            zf.extract(info, tmp_path)
            if info.external_attr >> 16:
                (tmp_path / info.filename).chmod(info.external_attr >> 16)
    r = subprocess.run([str(tmp_path / "moshi_rocm" / "bin" / "tiny-tool")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("core "), r


def test_a_base_wheel_missing_one_definition_of_its_compatibility_library_fails(floor_pair, tmp_path):
    """The sabotage of issue 21: moshi_compat_start_main renamed away inside the wheel (RECORD kept
    right by auditwheel's own InWheelCtx), so the tool's entry is no longer met."""
    from auditwheel.wheeltools import InWheelCtx

    base, _, spec = floor_pair
    broken = tmp_path / base.name
    with InWheelCtx(base, broken) as ctx:
        lib = Path(ctx.path) / "moshi_rocm" / "bin" / COMPAT
        (tmp_path / "map").write_text("moshi_compat_start_main moshi_compat_start_gone\n")
        subprocess.run(["patchelf", "--rename-dynamic-symbols", str(tmp_path / "map"), str(lib)], check=True)
    checks = results(broken, spec)
    assert checks["archive"].ok                       # a wheel pip would install
    line = checks["glibc-floor"].line
    assert line.startswith("FAIL glibc-floor: ") and "moshi_compat_start_main@GLIBC_2.2.5" in line, line
    assert f"does not define moshi_compat_start_main@GLIBC_2.2.5" in line or "tiny-tool imports" in line


def rewritten_record(base: Path, out: Path, change) -> Path:
    from auditwheel.wheeltools import InWheelCtx

    with InWheelCtx(base, out) as ctx:
        path = Path(ctx.path) / "moshi_rocm" / "_runtime.json"
        info = json.loads(path.read_text())
        change(info)
        path.write_text(json.dumps(info))
    return out


@pytest.mark.parametrize("hostile", [
    {"version": "../../../etc/passwd"}, {"version": 2.31}, {"libraries": 5},
    {"compat_soname": "../../x.so.1"}, {"suite": "Sid; rm -rf /"}, {"private": [["a"]]}])
def test_a_hostile_floor_record_fails_in_one_line(floor_pair, tmp_path, hostile):
    base, _, spec = floor_pair
    broken = rewritten_record(base, tmp_path / base.name,
                              lambda info: info["glibc_floor"]["compat"]["floor"].update(hostile))
    line = results(broken, spec)["glibc-floor"].line
    assert line.startswith("FAIL glibc-floor: the glibc_floor record is unreadable: not a glibc floor record"), line
    assert "\n" not in line


def test_a_lowered_base_wheel_whose_floor_record_was_removed_fails(floor_pair, tmp_path):
    base, _, spec = floor_pair
    broken = rewritten_record(base, tmp_path / base.name, lambda info: info.pop("glibc_floor"))
    line = results(broken, spec)["glibc-floor"].line
    assert line.startswith("FAIL glibc-floor: ") and f"link {COMPAT}, but moshi_rocm/_runtime.json has no " \
        "glibc_floor record" in line, line
