"""A CycloneDX document for a wheel the tests pack with zipfile (builder/package/sbom.py's render()):
its ELF members belong to one built component, the rest to moshi-build's generated records."""

from __future__ import annotations

from pathlib import Path

from builder.package import sbom

MEMBER = f"{sbom.SBOM_DIR}/{sbom.SBOM_FILE}"      # under the .dist-info


def document(distribution: str, version: str, members: dict[str, bytes | Path | None]) -> str:
    """The SBOM of a wheel holding `members` (name -> content, a file to copy or None: not ELF)."""
    def is_elf(content) -> bool:
        data = content.read_bytes()[:4] if isinstance(content, Path) else (content or b"")[:4]
        return data == b"\x7fELF"

    payload = [m for m in members if ".dist-info/" not in m]
    elf = tuple(m for m in payload if is_elf(members[m]))
    other = tuple(m for m in payload if m not in elf)
    items = [sbom.Item("component:demo", "demo", "1.0", "component", license="MIT", occurrences=elf,
                       purl="pkg:generic/demo@1.0", source=sbom.SourceFacts(
                           "archive", "pkg:generic/demo@1.0", url="https://example.org/demo-1.0.tar.gz",
                           sha256="0" * 64, filename="demo-1.0.tar.gz"))]
    if other:
        items.append(sbom.Item("generated:records", "moshi-build records", version, "generated", type="data",
                               occurrences=other))
    return sbom.render(distribution=distribution, version=version, items=items, license="MIT",
                       build={"rocm_stack": "test"}, tool_version="0.0.0")


def add_to(content: dict, dist_info: str) -> dict:
    """`content` with <dist_info>/sboms/moshi-build.cdx.json added (kept when it has one)."""
    name, version = dist_info.removesuffix(".dist-info").split("-", 1)
    content.setdefault(f"{dist_info}/{MEMBER}", document(name, version, content).encode())
    return content
