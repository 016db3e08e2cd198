"""`moshi-build verify`'s sbom check: the wheel's CycloneDX document (builder/package/sbom.py).

  sbom  exactly one <dist-info>/sboms/moshi-build.cdx.json, listed in RECORD, valid
        CycloneDX JSON naming the wheel's own name and version as metadata.component;
        every ELF member belongs to a listed component (evidence.occurrences), and no
        occurrence names a file the wheel does not hold

Other documents in sboms/ (auditwheel writes auditwheel.cdx.json when the host's
package manager owns the libraries it grafts) are left alone.
"""

from __future__ import annotations

import json

from packaging.utils import canonicalize_name, parse_wheel_filename

from builder.check.context import Check, Context
from builder.check.names import same_version
from builder.check.results import CheckResult, check_result, counted
from builder.check.wheel_contents import SBOM_SUFFIX as SUFFIX
from builder.common.wheel_reader import parse_record
from builder.package.sbom import PROPERTY, SBOM_DIR, SBOM_FILE, validate

NAME = "sbom"


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def check_sbom(ctx: Context) -> CheckResult:
    files = ctx.contents.files
    found = sorted(m for m in files if m.endswith(SUFFIX))
    if not found:
        return check_result(NAME, [f"no <dist-info>/{SBOM_DIR}/{SBOM_FILE}: the wheel was made before moshi-build "
                              "wrote SBOMs; rebuild it with this moshi-build"], "")
    problems: list[str] = []
    if len(found) > 1:
        problems.append(f"{len(found)} SBOMs of moshi-build, expected one: {', '.join(found)}")
    member = found[0]
    dist_info = member.split("/", 1)[0]
    wheel_name, wheel_version = parse_wheel_filename(ctx.contents.report.path.name)[:2]
    if member.count("/") != 2 or not dist_info.endswith(".dist-info"):
        problems.append(f"{member} is not in the wheel's .dist-info/{SBOM_DIR}/")
    record = ctx.contents.texts.get(f"{dist_info}/RECORD")
    unreadable: list[str] = []     # the archive check names RECORD's other faults
    entries = None if record is None else parse_record(record, f"{dist_info}/RECORD", unreadable)
    if entries is None and unreadable:
        problems.append(unreadable[0])
    elif entries is None or member not in entries:
        problems.append(f"{member} is not listed in {dist_info}/RECORD")
    text = ctx.contents.texts.get(member, "")
    try:
        doc = json.loads(text)
    except ValueError as e:
        return check_result(NAME, problems + [f"{member} is not JSON ({e})"], "")
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        return check_result(NAME, problems + [f"{member} is not a CycloneDX document (bomFormat "
                                         f"{doc.get('bomFormat') if isinstance(doc, dict) else None!r})"], "")
    errors = validate(text)
    if errors:
        problems.append(f"{member} does not follow the CycloneDX {doc.get('specVersion')} schema: {errors[0]}"
                        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    top = _dict(_dict(doc.get("metadata")).get("component"))
    if canonicalize_name(str(top.get("name"))) != wheel_name or not same_version(top.get("version"), wheel_version):
        problems.append(f"{member} describes {top.get('name')} {top.get('version')}, not this wheel "
                        f"({wheel_name} {wheel_version})")

    owners: dict[str, list[str]] = {}
    kinds: dict[str, int] = {}
    components = [c for c in _list(doc.get("components")) if isinstance(c, dict)]
    for c in components:
        origin = next((str(p.get("value")) for p in _list(c.get("properties"))
                       if isinstance(p, dict) and p.get("name") == PROPERTY + "origin"), "other")
        kinds[origin] = kinds.get(origin, 0) + 1
        for o in _list(_dict(c.get("evidence")).get("occurrences")):
            if isinstance(o, dict) and isinstance(o.get("location"), str):
                owners.setdefault(o["location"], []).append(str(c.get("name")))
    absent = sorted(loc for loc in owners if loc not in files)
    if absent:
        problems.append(f"occurrences name {counted(len(absent), 'file')} not in the wheel, e.g. {absent[0]} "
                        f"({', '.join(owners[absent[0]])})")
    uncovered = sorted(m for m in ctx.contents.elf if m not in owners)
    if uncovered:
        problems.append(f"{counted(len(uncovered), 'ELF file')} of the wheel in no component's occurrences: "
                        + ", ".join(uncovered[:5]) + (", ..." if len(uncovered) > 5 else ""))
    shared = sorted(m for m, names in owners.items() if len(set(names)) > 1)
    if shared:
        problems.append(f"{shared[0]} is claimed by {', '.join(sorted(set(owners[shared[0]])))}")
    made_of = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return check_result(NAME, problems, f"{counted(len(components), 'component')} ({made_of}); every one of "
                                        f"{counted(len(ctx.contents.elf), 'ELF file')} belongs to one")


CHECK = Check(NAME, check_sbom)
