"""verify's sbom check (builder/check/checks/sbom.py) on small wheels packed with zipfile: the good wheel of
test_verify.py with its SBOM, without one, with an ELF file no component claims, with an occurrence
naming a file the wheel lacks, naming another wheel, outside RECORD, not CycloneDX."""

from __future__ import annotations

import json
import zipfile

from builder.check import verify
from tests.check.test_verify import (DIST_INFO, PKG, check, elf, failing, fake_probe_root, members, pack,  # noqa: F401
                                     repack)
from tests.helpers import sbom as sbom_helper

SBOM = f"{DIST_INFO}/{sbom_helper.MEMBER}"


def sbom_line(tmp_path, content, **kwargs) -> str:
    results = check(tmp_path, content, **kwargs)
    return results["sbom"].line


def test_the_good_wheel_passes(tmp_path, elf):
    line = sbom_line(tmp_path, members(elf))
    assert line == "PASS sbom: 2 components (1 component, 1 generated); every one of 8 ELF files belongs to one"


def test_a_wheel_made_before_sboms_fails_with_one_line(tmp_path, elf):
    path = pack(tmp_path / "old", members(elf), with_sbom=False)
    report = verify.verify_wheel(path, probe_root=fake_probe_root(), build_paths=[tmp_path / "build-cache"])
    assert failing({c.name: c for c in report.checks}) == {"sbom": (
        "FAIL sbom: no <dist-info>/sboms/moshi-build.cdx.json: the wheel was made before moshi-build wrote SBOMs; "
        "rebuild it with this moshi-build")}


def test_an_elf_file_no_component_claims(tmp_path, elf):
    content = members(elf)
    cpu = f"{PKG}/bin/libggml-cpu-haswell.so"
    without = {k: v for k, v in content.items() if k != cpu}
    content[SBOM] = sbom_helper.document("moshi_rocm_gfx1100", "1.0.post0", without).encode()
    assert sbom_line(tmp_path, content) == f"FAIL sbom: 1 ELF file of the wheel in no component's occurrences: {cpu}"


def test_an_occurrence_naming_a_missing_file(tmp_path, elf):
    content = members(elf)
    ghost = f"{PKG}/bin/libghost.so"
    content[SBOM] = sbom_helper.document("moshi_rocm_gfx1100", "1.0.post0", {**content, ghost: b"\x7fELF"}).encode()
    assert sbom_line(tmp_path, content) == (f"FAIL sbom: occurrences name 1 file not in the wheel, e.g. {ghost} "
                                            "(demo)")


def test_a_document_of_another_wheel(tmp_path, elf):
    content = members(elf)
    content[SBOM] = sbom_helper.document("moshi-rocm-gfx1030", "1.0.post0", content).encode()
    assert sbom_line(tmp_path, content) == (f"FAIL sbom: {SBOM} describes moshi-rocm-gfx1030 1.0.post0, not this "
                                            "wheel (moshi-rocm-gfx1100 1.0.post0)")


def test_not_json_not_cyclonedx_not_valid(tmp_path, elf):
    for text, expected in [(b"{", "is not JSON"), (b'{"bomFormat": "SPDX"}', "is not a CycloneDX document"),
                           (json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": 3}).encode(),
                            "does not follow the CycloneDX 1.6 schema")]:
        content = members(elf)
        content[SBOM] = text
        line = sbom_line(tmp_path / expected.split()[-1], content)
        assert line.startswith(f"FAIL sbom: {SBOM} {expected}"), line


def test_an_sbom_not_listed_in_record(tmp_path, elf):
    good = pack(tmp_path / "good", members(elf))
    record = f"{DIST_INFO}/RECORD"
    text = zipfile.ZipFile(good).read(record).decode()
    unlisted = "".join(l + "\n" for l in text.splitlines() if not l.startswith(SBOM))
    bad = repack(good, tmp_path / "unlisted", replace={record: unlisted.encode()})
    report = verify.verify_wheel(bad, probe_root=fake_probe_root(), build_paths=[tmp_path / "build-cache"])
    results = {c.name: c for c in report.checks}
    assert results["sbom"].line == f"FAIL sbom: {SBOM} is not listed in {record}"
    assert not results["archive"].ok


def test_auditwheels_own_sbom_is_left_alone(tmp_path, elf):
    content = members(elf)
    content[f"{DIST_INFO}/sboms/auditwheel.cdx.json"] = b'{"bomFormat": "CycloneDX", "specVersion": "1.4"}'
    assert sbom_line(tmp_path, content).startswith("PASS sbom: ")


def test_a_record_with_a_16_mb_line_is_a_check_failure_in_one_line(tmp_path, elf):
    # probe F08d: RECORD with a 16 MB line raised _csv.Error in the sbom check
    good = pack(tmp_path / "good", members(elf))
    record = f"{DIST_INFO}/RECORD"
    text = zipfile.ZipFile(good).read(record).decode()
    bad = repack(good, tmp_path / "long", replace={record: (text + "x" * (16 << 20) + ",,\n").encode()})
    report = verify.verify_wheel(bad, probe_root=fake_probe_root(), build_paths=[tmp_path / "build-cache"])
    results = {c.name: c for c in report.checks}
    assert not results["sbom"].ok and f"{record} is not readable" in results["sbom"].line
    assert "\n" not in results["sbom"].line and len(results["sbom"].line) < 400
    assert not results["archive"].ok
