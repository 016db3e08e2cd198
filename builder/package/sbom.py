"""The wheel's software bill of materials: CycloneDX JSON in .dist-info/sboms/ (PEP 770).

One document per wheel (base, target and single kinds), written before the
wheel is packed (scikit-build-core installs it into the .dist-info, see
wheels/CMakeLists.txt) and checked by `moshi-build verify` (check/checks/sbom.py).
It lists

  components  each recipe we build: its source (purl, download or repository
              URL, the archive's sha256 or the git commit), its SPDX license,
              our patches (pedigree.patches, each with its sha256 and reason);
              a `--source` override is recorded as such, unverified
  deb         each Debian package of the runtime root whose files the wheel
              carries: pkg:deb/debian/NAME@VERSION?arch=ARCH
  generated   what moshi-build made rather than took: stand-in libraries, the
              launcher package, the JSON records

and, for each, the wheel members it contributed (evidence.occurrences; grafted
libraries under the names auditwheel will give them). metadata.component is
the wheel itself (pkg:pypi/NAME@VERSION); metadata.properties hold the build
environment's facts (ROCm stack, compilers, glibc).

render() is a pure function of plain data and deterministic: the same input
gives the same bytes (serialNumber is a uuid5 of the content, the timestamp
comes from SOURCE_DATE_EPOCH or the application's pinned date). wheel_items()
turns a staged payload and the components into that data.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from builder.rocm.standins import behaviour_of

SBOM_FILE = "moshi-build.cdx.json"
SBOM_DIR = "sboms"                       # inside <distribution>-<version>.dist-info (PEP 770)
PROPERTY = "moshi-build:"                # the namespace of our properties
SPEC_VERSION = "1.6"
# The namespace of the document's serialNumber (a uuid5 of its content).
_NAMESPACE = uuid.UUID("6f0c7a4e-3b1e-5d2a-9c8e-6d6f7368692d")


@dataclasses.dataclass(frozen=True)
class PatchFact:
    file: str
    sha256: str
    reason: str = ""
    component: str = ""                  # the folder under patches/ it lives in


@dataclasses.dataclass(frozen=True)
class SourceFacts:
    """Where a component's source came from (recipe.py's source, fetch.py's lock entry)."""

    kind: str                            # archive, pypi, debian, git, local
    purl: str
    url: str | None = None               # the archive's download URL or the repository
    sha256: str | None = None            # of the source archive (archive, pypi, debian)
    commit: str | None = None            # git
    filename: str | None = None
    verified: bool = True                # False: a --source override replaced the pinned source
    pin: str | None = None               # what the tree was made from (the lock entry's pin)
    patches: tuple[PatchFact, ...] = ()


@dataclasses.dataclass(frozen=True)
class Item:
    """One component of the document."""

    ref: str                             # bom-ref, unique in the document
    name: str
    version: str | None
    origin: str                          # "component" (a recipe), "deb" (a Debian package), "generated"
    license: str | None = None           # SPDX expression
    purl: str | None = None
    description: str = ""
    type: str = "library"                # CycloneDX component type
    source: SourceFacts | None = None
    occurrences: tuple[str, ...] = ()    # wheel members
    properties: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------- purls and sources

def _purl(type_: str, name: str, version: str | None = None, namespace: str | None = None,
          qualifiers: Mapping[str, str] | None = None) -> str:
    from packageurl import PackageURL

    return PackageURL(type=type_, namespace=namespace, name=name, version=version,
                      qualifiers=dict(qualifiers or {})).to_string()


def deb_purl(package: str, version: str, arch: str = "amd64") -> str:
    return _purl("deb", package, version, "debian", {"arch": arch or "amd64"})


def pypi_purl(distribution: str, version: str) -> str:
    from packaging.utils import canonicalize_name

    return _purl("pypi", canonicalize_name(distribution), version)


_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(\.git)?/?$")


def source_facts(recipe, lock: Mapping | None = None) -> SourceFacts:
    """A recipe's source as the SBOM records it; `lock` (SourceTree.lock_entry()) says what the
    tree was really made from: an unverified override is recorded as such."""
    from builder.sources import recipe as r

    src = recipe.source
    patches = tuple(PatchFact(p.file, p.sha256, p.reason, recipe.name) for p in recipe.patches)
    verified = True if lock is None else bool(lock.get("verified", True))
    pin = None if lock is None else lock.get("pin")
    common = dict(verified=verified, pin=pin, patches=patches)
    if isinstance(src, r.ArchiveSource):
        return SourceFacts("archive", _purl("generic", recipe.name, recipe.version,
                                            qualifiers={"download_url": src.url, "checksum": f"sha256:{src.sha256}"}),
                           url=src.url, sha256=src.sha256, filename=src.filename, **common)
    if isinstance(src, r.PypiSource):
        return SourceFacts("pypi", _purl("pypi", src.package.lower().replace("_", "-"), src.version,
                                         qualifiers={"file_name": src.filename,
                                                     "checksum": f"sha256:{src.sha256}"}),
                           sha256=src.sha256, filename=src.filename, **common)
    if isinstance(src, r.DebianSource):
        return SourceFacts("debian", _purl("deb", src.package, src.version, "debian", {"arch": "source",
                                                                                     "checksum": f"sha256:{src.sha256}"}),
                           sha256=src.sha256, filename=src.filename, **common)
    if isinstance(src, r.GitSource):
        m = _GITHUB.match(src.url)
        purl = _purl("github", m.group("repo"), src.commit, m.group("owner")) if m else \
            _purl("generic", recipe.name, recipe.version, qualifiers={"vcs_url": f"git+{src.url}@{src.commit}"})
        return SourceFacts("git", purl, url=src.url, commit=src.commit, **common)
    return SourceFacts("local", _purl("generic", recipe.name, recipe.version), **common)


def timestamp(date: str | None, environ: Mapping[str, str] = os.environ) -> datetime.datetime | None:
    """The time the wheel's members are stamped with (project.source_date_epoch: SOURCE_DATE_EPOCH
    when set, else the application's pinned date); None when neither is given."""
    from builder.package.timestamps import source_date_epoch

    if not environ.get("SOURCE_DATE_EPOCH") and not date:
        return None
    return datetime.datetime.fromtimestamp(source_date_epoch({"date": date}, environ), datetime.timezone.utc)


# --------------------------------------------------------------------------- the document

def _license(expression: str | None):
    from cyclonedx.model.license import LicenseExpression

    return [LicenseExpression(expression)] if expression else []


def _properties(pairs: Iterable[tuple[str, object]]):
    from cyclonedx.model import Property

    return [Property(name=PROPERTY + k, value=str(v)) for k, v in pairs if v not in (None, "", [], {})]


def _source_parts(source: SourceFacts) -> dict:
    """externalReferences, pedigree and properties of a component's source."""
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, XsUri
    from cyclonedx.model.component import Diff, Patch, PatchClassification, Pedigree
    from cyclonedx.model.issue import IssueClassification, IssueType

    refs = []
    sha = [HashType(alg=HashAlgorithm.SHA_256, content=source.sha256)] if source.sha256 else []
    if source.kind == "archive" and source.url:
        refs.append(ExternalReference(type=ExternalReferenceType.SOURCE_DISTRIBUTION, url=XsUri(source.url),
                                      hashes=sha, comment=source.filename))
    elif source.kind == "git" and source.url:
        refs.append(ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(source.url),
                                      comment=f"commit {source.commit}"))
    patches = [Patch(type=PatchClassification.UNOFFICIAL,
                     diff=Diff(url=XsUri(f"patches/{p.component}/{p.file}")),
                     resolves=[IssueType(type=IssueClassification.DEFECT, id=p.file, name=p.file,
                                         description=p.reason or None)])
               for p in source.patches]
    props = [("source.kind", source.kind), ("source.sha256", source.sha256), ("source.commit", source.commit),
             ("source.filename", source.filename)]
    props += [(f"patch.{p.file}.sha256", p.sha256) for p in source.patches]
    if not source.verified:
        props += [("source.override", "a local source given with --source replaced the pinned one; "
                                      "it is not the source the purl names and was not verified"),
                  ("source.override.pin", source.pin)]
    return {"external_references": refs, "pedigree": Pedigree(patches=patches) if patches else None,
            "properties": props}


def _component(item: Item):
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.component_evidence import ComponentEvidence, Occurrence
    from packageurl import PackageURL

    props: list[tuple[str, object]] = [("origin", item.origin)]
    extra: dict = {}
    if item.source is not None:
        parts = _source_parts(item.source)
        props += parts.pop("properties")
        extra.update(parts)
    props += list(item.properties)
    evidence = ComponentEvidence(occurrences=[Occurrence(location=m) for m in sorted(set(item.occurrences))]) \
        if item.occurrences else None
    return Component(name=item.name, version=item.version, type=ComponentType(item.type), bom_ref=item.ref,
                     purl=PackageURL.from_string(item.purl) if item.purl else None,
                     description=item.description or None, licenses=_license(item.license),
                     properties=_properties(props), evidence=evidence, **extra)


def render(*, distribution: str, version: str, items: Sequence[Item], build: Mapping[str, object] | None = None,
           license: str | None = None, when: datetime.datetime | None = None,
           tool_version: str | None = None) -> str:
    """The CycloneDX JSON text (specVersion 1.6) of a wheel made of `items`."""
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    refs = [i.ref for i in items]
    if len(set(refs)) != len(refs):
        raise ValueError(f"bom-refs are not unique: {sorted(r for r in set(refs) if refs.count(r) > 1)}")
    wheel_purl = pypi_purl(distribution, version)
    me = Component(name="moshi-build", version=tool_version or _own_version(), type=ComponentType.APPLICATION,
                   bom_ref="tool:moshi-build", description="builds the wheel and writes this document")
    build_props = sorted(((f"build.{k}", json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v)
                          for k, v in (build or {}).items() if v not in (None, "", [], {})), key=lambda kv: kv[0])

    def bom(serial: uuid.UUID) -> str:
        metadata = BomMetaData(
            component=Component(name=distribution, version=version, type=ComponentType.LIBRARY,
                                bom_ref=wheel_purl, purl=PackageURL.from_string(wheel_purl),
                                licenses=_license(license)),
            tools=ToolRepository(components=[me]), timestamp=when, properties=_properties(build_props))
        doc = Bom(components=[_component(i) for i in sorted(items, key=lambda i: i.ref)],
                  serial_number=serial, metadata=metadata)
        for i in items:
            doc.register_dependency(doc.metadata.component, [c for c in doc.components if c.bom_ref.value == i.ref])
        text = JsonV1Dot6(doc).output_as_string(indent=2)
        data = json.loads(text)
        if when is None:     # the library stamps the current time otherwise
            data["metadata"].pop("timestamp", None)
        data.get("components", []).sort(key=lambda c: c["bom-ref"])
        for c in data.get("components", []):   # the library keeps them in the order given
            if "evidence" in c:
                c["evidence"]["occurrences"].sort(key=lambda o: o["location"])
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    draft = bom(uuid.UUID(int=0))
    return bom(uuid.uuid5(_NAMESPACE, hashlib.sha256(draft.encode()).hexdigest()))


def _own_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("moshi-build")
    except metadata.PackageNotFoundError:
        return "unknown"


def validate(text: str) -> list[str]:
    """The schema errors of a CycloneDX 1.6 JSON text (none: valid)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return [str(e) for e in (errors or [])]


# --------------------------------------------------------------------------- from a staged payload

def wheel_items(*, payload, components: Sequence, standins: Sequence[Mapping], info_member: str,
                launcher_files: Sequence[str] = (), launcher_version: str | None = None,
                grafts: Mapping[str, str] | None = None) -> list[Item]:
    """The items of a wheel from its staged payload (staging.Payload: `origins` says where each
    staged file came from, `library_origins` where each library auditwheel grafts came from).

    components: project.Component (steps, source) of the recipes whose prefixes were staged
    standins:   the generated stand-ins the wheel carries (their records: package, version, soname)
    grafts:     SONAME -> the member auditwheel will write it as (<distribution>.libs/<name>-<sha8>...)
    launcher_files: members of the launcher package (wheels/src/<package>)
    """
    occurrences: dict[tuple[str, str], list[str]] = {}
    for member, origin in payload.origins.items():
        occurrences.setdefault(origin, []).append(member)
    for soname, member in (grafts or {}).items():
        occurrences.setdefault(payload.library_origins.get(soname, ("unowned", soname)), []).append(member)
    generated = {(s.get("package"), s.get("version")): s for s in standins}
    items: list[Item] = []
    by_step = {step: c for c in components for step in getattr(c, "steps", ())}
    by_name = {c.name: c for c in components}
    component_members: dict[str, list[str]] = {}
    for (kind, name), members in sorted(occurrences.items()):
        if kind == "step":
            c = by_step.get(name) or by_name.get(name)
            if c is not None:
                component_members.setdefault(c.name, []).extend(members)
            else:
                items.append(Item(f"step:{name}", name, None, "component", occurrences=tuple(members),
                                  description=f"files of the build step {name}, which no component names"))
    for c in components:
        source = getattr(c, "source", None)
        items.append(Item(f"component:{c.name}", c.name, c.version, "component", license=c.license,
                          purl=source.purl if source is not None else None, source=source,
                          occurrences=tuple(component_members.get(c.name, ()))))
    for p in payload.system:
        members = occurrences.get(("deb", p.package), []) + occurrences.get(("standin", p.package), [])
        record = generated.get((p.package, p.version))
        if record is not None:
            items.append(Item(f"generated:standin:{p.package}", p.package, p.version, "generated",
                              license=p.license, occurrences=tuple(members),
                              description=f"a stand-in library generated by moshi-build for {record.get('replaces')}: "
                                          f"it defines the names {record.get('consumer')} imports; each "
                                          f"{behaviour_of(record)}",
                              properties=(("standin.soname", record.get("soname")),
                                          ("standin.replaces", record.get("replaces")),
                                          ("standin.consumer", record.get("consumer")),
                                          ("standin.symbols", len(record.get("symbols") or ())))))
        else:
            items.append(Item(f"deb:{p.package}", p.package, p.version, "deb", license=p.license,
                              purl=deb_purl(p.package, p.version, getattr(p, "architecture", "") or "amd64"),
                              occurrences=tuple(members)))
    known = {("deb", p.package) for p in payload.system} | {("standin", p.package) for p in payload.system}
    for (kind, name), members in sorted(occurrences.items()):
        if kind in ("deb", "standin") and (kind, name) not in known:
            items.append(Item(f"deb:{name}", name, None, "deb", occurrences=tuple(members),
                              description="a package of the runtime root the wheel's license list does not name"))
        elif kind == "unowned":
            items.append(Item(f"unowned:{name}", name, None, "deb", occurrences=tuple(members),
                              description="files of the runtime root no Debian package owns"))
    if launcher_files:
        items.append(Item("generated:launcher", payload.kind.package if payload.kind else "launcher",
                          launcher_version, "generated", license="MIT", occurrences=tuple(launcher_files),
                          description="moshi-build's launcher package (wheels/src): console scripts, "
                                      "doctor, info, selftest"))
    items.append(Item("generated:records", "moshi-build records", launcher_version, "generated", type="data",
                      occurrences=(info_member,),
                      description="what moshi-build recorded of the build (targets, libraries, rules)"))
    return items


def for_wheel(*, payload, components: Sequence, standins: Sequence[Mapping], info_file: Path, project: Path,
              distribution: str, version: str, license: str, build: Mapping[str, object],
              date: str | None) -> str:
    """The document of the wheel build_wheel() is about to pack: the payload staged for it, the
    launcher package copied into its project (not in a target wheel), the grafts auditwheel will
    make (named by the sha256 of the files it will copy)."""
    from builder.common.wheel_reader import grafted_name
    from builder.common.files import sha256_file

    kind = payload.kind
    grafts = {soname: f"{kind.libs_dir}/{grafted_name(lib.realpath.name, sha256_file(lib.realpath)[:8])}"
              for soname, lib in payload.closure.libraries.items()}
    launcher = project / "src" / kind.package
    launcher_files = sorted(f"{kind.package}/{p.relative_to(launcher).as_posix()}" for p in launcher.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts) if kind.name != "target" else []
    items = wheel_items(payload=payload, components=components, standins=standins,
                        info_member=info_file.relative_to(payload.root).as_posix(), launcher_files=launcher_files,
                        launcher_version=version, grafts=grafts)
    return render(distribution=distribution, version=version, items=items, build=build, license=license,
                  when=timestamp(date))
