"""`moshi-build verify`'s glibc-floor check: the wheel loads on the glibc its tag names
(runtime.toml [glibc_floor], builder/package/glibc_floor.py).

  glibc-floor  the platform tag is the floor's (manylinux_2_31); every ELF member's glibc
               need is exported by the floor's own glibc (its symbol table, taken from the
               floor suite's libc) or defined at that version by the compatibility library
               of the base wheel, which itself needs nothing above the floor; every need of
               a private library (libstdc++-moshi) is defined by the bundled copy, every
               GCC_* need by the floor's libgcc_s; no file needs the system's libstdc++

Recomputed from the wheel alone (and, for a target wheel, its base): the builder's own
post-condition is not trusted. A wheel without a floor record passes here; its tag is then
held to its symbol versions by the manylinux check, which a floor record relaxes.
"""

from __future__ import annotations

import posixpath

from builder.check.context import Check, Context
from builder.check.results import LINE_ITEMS, CheckResult
from builder.package.floor_spec import FloorSpec, version_key
from builder.package.glibc_floor import compat_problems_of, floor_problems, load_table

NAME = "glibc-floor"


def _result(problems: list[str], passed: str) -> CheckResult:
    # Unlike check_result(), the problems are not kept apart (the JSON's "problems" stays empty)
    # and the count of the rest is in parentheses: the output of this check as it always was.
    if problems:
        more = f" (and {len(problems) - LINE_ITEMS} more)" if len(problems) > LINE_ITEMS else ""
        return CheckResult(NAME, False, "; ".join(problems[:LINE_ITEMS]) + more)
    return CheckResult(NAME, True, passed)


def check_glibc_floor(ctx: Context) -> CheckResult:
    info = ctx.info if isinstance(ctx.info, dict) else {}
    record = info.get("glibc_floor")
    if not isinstance(record, dict):
        return _without_floor(ctx)
    try:
        compat_record = record["compat"]
        spec = FloorSpec.from_json(compat_record["floor"])
        table = load_table(spec.version)
        declared = [s for s in compat_record["symbols"] if isinstance(s, str)]
    except (KeyError, TypeError, ValueError) as e:
        return _result([f"the glibc_floor record is unreadable: {e}"], "")
    except Exception as e:   # a floor this builder has no table for
        return _result([f"no symbol table for the glibc floor of the record: {e}"], "")
    problems: list[str] = []
    tags = ctx.contents.report.platform_tags
    arch = tags[0].rsplit("_", 1)[-1] if tags else "x86_64"
    arch = "x86_64" if arch == "64" else arch
    want = spec.platform_tag(arch)
    wrong = [t for t in tags if t != want]
    if wrong or not tags:
        problems.append(f"tagged {', '.join(tags) or 'nothing'}; a glibc {spec.version} floor is {want}")
    compat, private_versions = _base_libraries(ctx, info, spec, table, declared, problems)

    from_glibc = from_compat = 0
    for member, details in sorted(ctx.contents.details.items()):
        if details.symbols is None:
            problems.append(f"{member}: its symbol versions cannot be read")
            continue
        problems += floor_problems(posixpath.basename(member), details.symbols, spec, table, compat, private_versions)
        for (symbol, version) in details.symbols.imports_from(spec.libraries):
            if version_key(version):
                if table.exported(symbol, version):
                    from_glibc += 1
                else:
                    from_compat += 1
    newest = max((v for v in private_versions if v.startswith("GLIBCXX_")), key=lambda v: tuple(
        int(x) for x in v.split("_")[1].split(".") if x.isascii() and x.isdigit()), default="none")
    source = table.source or {}
    return _result(problems, (
        f"{want}: {len(ctx.contents.details)} ELF files load on glibc {spec.version} "
        f"({source.get('suite', spec.suite)} libc6 {source.get('libc6', '?')}): {from_glibc} imports from its "
        f"glibc, {from_compat} from {spec.compat_soname} ({len(declared)} names), which needs nothing above "
        f"{spec.version}; private libraries up to {newest}"))


def _without_floor(ctx: Context) -> CheckResult:
    """Made without [glibc_floor]: the manylinux check holds its tag to the symbol versions;
    but files that link a compatibility library were lowered and need the record's proof."""
    floor = ctx.spec.glibc_floor
    lowered = sorted(m for m, f in ctx.contents.elf.items() if floor is not None and floor.compat_soname in f.needed)
    if lowered:
        return _result([f"{posixpath.basename(lowered[0])} and {len(lowered) - 1} more link {floor.compat_soname}, "
                        f"but {ctx.info_member or 'the wheel'} has no glibc_floor record to check them against"], "")
    return _result([], "no glibc floor in the wheel's record: its tag is checked by manylinux alone")


def _base_libraries(ctx: Context, info: dict, spec: FloorSpec, table, declared: list[str],
                    problems: list[str]) -> tuple[dict[str, set[str]], set[str]]:
    """(what the compatibility library defines: name -> versions, the versions the private libraries
    define). Both live in the base wheel's folder (a self-contained wheel's own)."""
    base = ctx.base if ctx.kind == "target" else None
    base_contents = base.contents if base is not None else ctx.contents
    base_info = base.info if base is not None else info
    if base is not None and (base_info.get("glibc_floor") or {}).get("compat", {}).get("symbols") != declared:
        problems.append("the record's compatibility library differs from the base wheel's")
    bin_dir = f"{base_info.get('package', ctx.spec.package)}/{base_info.get('bin_dir', ctx.spec.bin_dir)}"
    compat_member = f"{bin_dir}/{spec.compat_soname}"
    compat_details = base_contents.details.get(compat_member)
    compat: dict[str, set[str]] = {}
    if compat_details is None or compat_details.symbols is None:
        problems.append(f"{compat_member} is missing or unreadable")
    else:
        compat = {n: set(vs) for n, vs in compat_details.symbols.exports.items()}
        problems += [f"{spec.compat_soname} {p}" for p in
                     compat_problems_of(compat_details.symbols, declared, spec, table)]
    private_versions: set[str] = set()
    for _, ships_as in spec.private:
        d = base_contents.details.get(f"{bin_dir}/{ships_as}")
        if d is None or d.symbols is None:
            problems.append(f"{bin_dir}/{ships_as} is missing or unreadable")
        else:
            private_versions |= d.symbols.defined_versions
    return compat, private_versions


CHECK = Check(NAME, check_glibc_floor)
