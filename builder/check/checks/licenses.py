"""`moshi-build verify`'s licenses check: every part of the wheel ships its license.

  licenses  METADATA has a License-Expression and every License-File it lists is in the
            wheel; every component and system package the wheel's record names has its
            license file; every grafted library (auditwheel's <distribution>.libs) belongs
            to one of those system packages
"""

from __future__ import annotations

import email.parser
import posixpath
import re

from builder.check.context import Check, Context
from builder.check.results import CheckResult, check_result
from builder.common.wheel_reader import built_name

NAME = "licenses"


def library_stem(name: str) -> str:
    """libelf-0.192.so -> libelf, libSDL2-2.0.so.0 -> libSDL2, libwayland-client.so.0.23.1 -> libwayland-client."""
    stem = name.split(".so", 1)[0]
    return re.sub(r"-[0-9][0-9.]*$", "", stem)


def check_licenses(ctx: Context) -> CheckResult:
    files = ctx.contents.files
    metadata_member = next((m for m in sorted(ctx.contents.texts) if m.endswith(".dist-info/METADATA")), None)
    problems = []
    if metadata_member is None:
        return check_result(NAME, ["no .dist-info/METADATA in the wheel"], "")
    dist_info = metadata_member.rsplit("/", 1)[0]
    licenses = f"{dist_info}/licenses/"
    message = email.parser.Parser().parsestr(ctx.contents.texts[metadata_member], headersonly=True)
    if not message.get("License-Expression"):
        problems.append("METADATA has no License-Expression")
    declared = message.get_all("License-File") or []
    for f in declared:
        if licenses + f not in files:
            problems.append(f"METADATA lists License-File {f}, which is not in {licenses}")
    info = ctx.info or {}
    components = info.get("components", [])
    packages = info.get("system_packages", [])
    for c in components:
        folder = f"{licenses}LICENSES/{c['name']}/"
        if not any(m.startswith(folder) for m in files):
            problems.append(f"component {c['name']} {c.get('version', '')}: no license file under {folder}")
    for p in packages:
        member = f"{licenses}LICENSES/system/{p['package']}/copyright"
        if member not in files:
            problems.append(f"system package {p['package']}: {member} is missing")
    # Every grafted library must come from a package whose license ships.
    if ctx.libs_dir:
        stems = {library_stem(lib) for p in packages for lib in p.get("libraries", [])}
        for member in sorted(m for m in ctx.contents.elf if m.startswith(ctx.libs_dir + "/")):
            name = built_name(member, ctx.libs_dir)
            if library_stem(name) not in stems:
                problems.append(f"{posixpath.basename(member)} is bundled but no system package of "
                                f"{ctx.info_member or '_runtime.json'} lists it, so its license is unknown")
    return check_result(NAME, problems,
                        f"{len(components)} components and {len(packages)} system packages, each with its license "
                        f"file; {len(declared)} License-File entries present")


CHECK = Check(NAME, check_licenses)
