"""builder/package/sbom.py: the CycloneDX document of a wheel, from small inputs, validated by
cyclonedx-python-lib's own JSON schema validator."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from builder.package import sbom
from builder.package.project import Component, SystemPackage, component_from_recipe
from builder.package.staging import WheelKind
from builder.sources.recipe import load_recipes
from tests.helpers.archives import recipe_for

SHA = "ab" * 32
PATCH_SHA = "cd" * 32


def demo_items() -> list[sbom.Item]:
    source = sbom.SourceFacts("archive", "pkg:generic/demo@1.0?download_url=https://example.org/demo-1.0.tar.gz",
                              url="https://example.org/demo-1.0.tar.gz", sha256=SHA, filename="demo-1.0.tar.gz",
                              patches=(sbom.PatchFact("0001-fix.patch", PATCH_SHA, "fixes the build", "demo"),))
    return [
        sbom.Item("component:demo", "demo", "1.0", "component", license="MIT", purl=source.purl, source=source,
                  occurrences=("moshi_rocm/bin/libdemo.so", "moshi_rocm/bin/demo-tool")),
        sbom.Item("deb:libfoo1", "libfoo1", "1:2.0-3", "deb", license="BSD-3-Clause",
                  purl=sbom.deb_purl("libfoo1", "1:2.0-3"), occurrences=("moshi_rocm.libs/libfoo-0a1b2c3d.so.1",)),
        sbom.Item("generated:records", "moshi-build records", "1.0.post0", "generated", type="data",
                  occurrences=("moshi_rocm/_runtime.json",)),
    ]


def render(**changes) -> str:
    args = dict(distribution="moshi-rocm", version="1.0.post0", items=demo_items(), license="MIT AND BSD-3-Clause",
                build={"rocm_stack": "7.2", "clang_version": "22.1", "standins": []},
                when=sbom.timestamp("2026-02-18", {}), tool_version="0.1.0")
    args.update(changes)
    return sbom.render(**args)


def component(doc: dict, ref: str) -> dict:
    return next(c for c in doc["components"] if c["bom-ref"] == ref)


def props(entry: dict) -> dict[str, str]:
    return {p["name"].removeprefix(sbom.PROPERTY): p["value"] for p in entry.get("properties", [])}


def test_the_document_is_valid_cyclonedx_naming_the_wheel():
    text = render()
    assert sbom.validate(text) == []
    doc = json.loads(text)
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.6")
    top = doc["metadata"]["component"]
    assert (top["name"], top["version"], top["purl"]) == ("moshi-rocm", "1.0.post0", "pkg:pypi/moshi-rocm@1.0.post0")
    assert top["licenses"] == [{"expression": "MIT AND BSD-3-Clause"}]
    assert doc["metadata"]["timestamp"] == "2026-02-18T00:00:00+00:00"
    assert props(doc["metadata"])["build.rocm_stack"] == "7.2"
    assert "build.standins" not in props(doc["metadata"])          # empty facts are left out
    assert [t["name"] for t in doc["metadata"]["tools"]["components"]] == ["moshi-build"]
    assert [c["bom-ref"] for c in doc["components"]] == ["component:demo", "deb:libfoo1", "generated:records"]


def test_a_component_lists_its_source_patches_and_members():
    doc = json.loads(render())
    demo = component(doc, "component:demo")
    assert demo["purl"] == "pkg:generic/demo@1.0?download_url=https://example.org/demo-1.0.tar.gz"
    assert demo["licenses"] == [{"expression": "MIT"}]
    (ref,) = demo["externalReferences"]
    assert (ref["type"], ref["url"], ref["hashes"]) == (
        "source-distribution", "https://example.org/demo-1.0.tar.gz", [{"alg": "SHA-256", "content": SHA}])
    (patch,) = demo["pedigree"]["patches"]
    assert patch["diff"]["url"] == "patches/demo/0001-fix.patch"
    assert patch["resolves"][0]["description"] == "fixes the build"
    assert props(demo)["patch.0001-fix.patch.sha256"] == PATCH_SHA
    assert props(demo)["origin"] == "component" and props(demo)["source.sha256"] == SHA
    assert [o["location"] for o in demo["evidence"]["occurrences"]] == ["moshi_rocm/bin/demo-tool",
                                                                        "moshi_rocm/bin/libdemo.so"]
    deb = component(doc, "deb:libfoo1")
    assert deb["purl"] == "pkg:deb/debian/libfoo1@1:2.0-3?arch=amd64"


def test_the_same_input_gives_the_same_bytes():
    first, second = render(), render(items=list(reversed(demo_items())))
    assert first == second
    doc = json.loads(first)
    assert doc["serialNumber"].startswith("urn:uuid:") and doc["serialNumber"] != f"urn:uuid:{'0' * 8}-0000-0000-0000-{'0' * 12}"
    assert json.loads(render(version="1.0.post1"))["serialNumber"] != doc["serialNumber"]


def test_timestamp_from_source_date_epoch_else_the_pinned_date():
    assert sbom.timestamp("2026-02-18", {"SOURCE_DATE_EPOCH": "1700000000"}).isoformat() == "2023-11-14T22:13:20+00:00"
    # the zip members' clamp: nothing before 1980
    assert sbom.timestamp("2026-02-18", {"SOURCE_DATE_EPOCH": "0"}).isoformat() == "1980-01-01T00:00:00+00:00"
    assert sbom.timestamp("2026-02-18", {}).isoformat() == "2026-02-18T00:00:00+00:00"
    assert sbom.timestamp(None, {}) is None
    assert "timestamp" not in json.loads(render(when=None))["metadata"]


def test_refs_must_be_unique():
    with pytest.raises(ValueError, match="component:demo"):
        render(items=demo_items() + demo_items()[:1])


def test_the_recipes_sources_give_purls_hashes_and_patches():
    recipes = load_recipes()
    facts = {name: sbom.source_facts(r) for name, r in recipes.items()}
    app = facts["moshi.cpp"]
    assert app.purl == f"pkg:github/codes4fun/moshi.cpp@{recipes['moshi.cpp'].commit}"   # purl lower-cases
    assert app.commit == recipes["moshi.cpp"].commit and app.url == recipes["moshi.cpp"].source.url
    assert [p.file for p in app.patches] == [p.file for p in recipes["moshi.cpp"].patches]
    assert app.patches[0].sha256 == recipes["moshi.cpp"].patches[0].sha256 and app.patches[0].reason
    ffmpeg = facts["ffmpeg"]
    assert ffmpeg.purl.startswith("pkg:generic/ffmpeg@") and "download_url=" in ffmpeg.purl
    assert ffmpeg.sha256 == recipes["ffmpeg"].source.sha256
    assert facts["opus"].purl.startswith("pkg:deb/debian/opus@1.5.2-2?arch=source&checksum=sha256:")
    assert facts["sentencepiece"].purl.startswith("pkg:pypi/sentencepiece@")
    assert "file_name=" in facts["sentencepiece"].purl
    # all six, through the pipeline's Component, in one valid document
    comps = [component_from_recipe(r, Path("/nonexistent")) for r in recipes.values()]
    items = [sbom.Item(f"component:{c.name}", c.name, c.version, "component", license=c.license,
                       purl=c.source.purl, source=c.source) for c in comps]
    text = sbom.render(distribution="moshi-rocm", version="0.0.0.20260218.post0", items=items, tool_version="0")
    assert sbom.validate(text) == []
    assert len(json.loads(text)["components"]) == len(recipes)


def test_a_local_override_is_recorded_as_unverified(tmp_path):
    recipe = recipe_for(tmp_path, {"kind": "archive", "url": "https://example.org/demo-1.0.tar.gz", "sha256": SHA})
    facts = sbom.source_facts(recipe, {"verified": False, "pin": "tree:0123abcd"})
    doc = json.loads(sbom.render(distribution="x", version="1", tool_version="0", items=[
        sbom.Item("component:demo", "demo", "1.0", "component", purl=facts.purl, source=facts)]))
    p = props(component(doc, "component:demo"))
    assert "not verified" in p["source.override"] and p["source.override.pin"] == "tree:0123abcd"
    assert "source.override" not in props(json.loads(render())["components"][0])


def fake_payload(tmp_path: Path):
    """What wheel_items() reads of a staging.Payload."""
    kind = WheelKind("base", "moshi-rocm", "moshi_rocm", "bin", ".libs", None)
    root = tmp_path / "payload"
    return types.SimpleNamespace(
        root=root, kind=kind,
        origins={"moshi_rocm/bin/moshi-tts": ("step", "moshi.cpp"), "moshi_rocm/bin/libggml-base.so": ("step", "ggml-core"),
                 "moshi_rocm/bin/libamdhip64.so.7": ("deb", "libamdhip64-7"),
                 "moshi_rocm/bin/custom.so": ("step", "mystery"), "moshi_rocm/_runtime.json": ("generated", "records")},
        library_origins={"libz3.so.4": ("standin", "libz3-4"), "libhsa-runtime64.so.1": ("deb", "libhsa-runtime64-1")},
        system=[SystemPackage("libamdhip64-7", "7.2.4-1", "MIT", Path("/c"), ("libamdhip64.so.7",), "amd64"),
                SystemPackage("libhsa-runtime64-1", "7.2.4-1", "NCSA", Path("/c"), ("libhsa-runtime64.so.1",)),
                SystemPackage("libz3-4", "4.13.3-1+moshibuild1", "MIT", Path("/c"), ("libz3.so.4",))])


def test_wheel_items_from_a_payload(tmp_path):
    payload = fake_payload(tmp_path)
    comps = [Component("ggml", "0.9", "MIT", (), ("ggml-core", "ggml-hip")),
             Component("moshi.cpp", "0.0.0", "MIT", (), ("moshi.cpp",))]
    standin = {"package": "libz3-4", "version": "4.13.3-1+moshibuild1", "soname": "libz3.so.4",
               "replaces": "Z3 4.13.3", "consumer": "libLLVM.so.22.1", "symbols": ["Z3_mk_config"]}
    items = sbom.wheel_items(payload=payload, components=comps, standins=[standin], info_member="moshi_rocm/_runtime.json",
                             launcher_files=["moshi_rocm/__init__.py"], launcher_version="1.0",
                             grafts={"libz3.so.4": "moshi_rocm.libs/libz3-0a1b2c3d.so.4",
                                     "libhsa-runtime64.so.1": "moshi_rocm.libs/libhsa-runtime64-1a2b3c4d.so.1"})
    by_ref = {i.ref: i for i in items}
    assert by_ref["component:ggml"].occurrences == ("moshi_rocm/bin/libggml-base.so",)
    assert by_ref["component:moshi.cpp"].occurrences == ("moshi_rocm/bin/moshi-tts",)
    assert by_ref["step:mystery"].occurrences == ("moshi_rocm/bin/custom.so",)
    assert by_ref["deb:libhsa-runtime64-1"].occurrences == ("moshi_rocm.libs/libhsa-runtime64-1a2b3c4d.so.1",)
    assert by_ref["deb:libhsa-runtime64-1"].purl == "pkg:deb/debian/libhsa-runtime64-1@7.2.4-1?arch=amd64"
    z3 = by_ref["generated:standin:libz3-4"]
    assert (z3.origin, z3.occurrences, z3.purl) == ("generated", ("moshi_rocm.libs/libz3-0a1b2c3d.so.4",), None)
    assert "deb:libz3-4" not in by_ref
    assert by_ref["generated:launcher"].occurrences == ("moshi_rocm/__init__.py",)
    assert by_ref["generated:records"].occurrences == ("moshi_rocm/_runtime.json",)
    text = sbom.render(distribution="moshi-rocm", version="1.0", items=items, tool_version="0")
    assert sbom.validate(text) == []
    assert str(tmp_path) not in text and '"/' not in text       # no absolute path of the build machine
