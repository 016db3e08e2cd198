"""The wheel project's text: name, version, license expression, console scripts,
pyproject.toml and README.md rendered from the wheels/ template."""

from __future__ import annotations
import dataclasses
import json
import keyword
import logging
import os
import re
import string
import tomllib
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from builder.errors import ConfigurationError
from builder.sources.recipe import PROJECT_ROOT


log = logging.getLogger(__name__)


TEMPLATE_DIR = PROJECT_ROOT / "wheels"


@dataclasses.dataclass(frozen=True)
class Component:
    """A bundled upstream component: what the metadata and the licenses name."""

    name: str
    version: str
    license: str                      # SPDX expression
    license_files: tuple[Path, ...] = ()
    steps: tuple[str, ...] = ()       # the recipe's build steps (whose prefixes hold its files)
    source: object | None = None      # sbom.SourceFacts: where its source came from, our patches

    @classmethod
    def coerce(cls, value: "Component | Sequence | Mapping") -> "Component":
        if isinstance(value, Component):
            return value
        if isinstance(value, Mapping):
            value = (value["name"], value["version"], value["license"], value.get("license_files", ()))
        name, version, license_, files = value
        if isinstance(files, (str, os.PathLike)):
            files = (files,)
        return cls(str(name), str(version), str(license_), tuple(Path(f) for f in files))


def component_from_recipe(recipe, source_dir: Path, tree=None) -> Component:
    """A Component from a loaded Recipe, its license files found in its source tree; with the
    SourceTree `tree` (fetch.py), what its source was made from, for the wheel's SBOM."""
    from builder.package import sbom

    lock = tree.lock_entry() if tree is not None else None
    return Component(recipe.name, recipe.version, recipe.license,
                     tuple(Path(source_dir) / f for f in recipe.license_files),
                     tuple(s.step for s in recipe.build), sbom.source_facts(recipe, lock))


@dataclasses.dataclass(frozen=True)
class SystemPackage:
    """A package of the runtime root whose libraries end up in the wheel."""

    package: str
    version: str
    license: str
    copyright: Path
    libraries: tuple[str, ...]
    architecture: str = ""            # dpkg's (amd64, all): the SBOM's purl names it


MAX_BUILD_NUMBER = 999_999_999


def wheel_version(release: str, build_number: int, version_format: str = "{release}.post{build_number}",
                  date: str | None = None) -> str:
    """The wheel's version: the main component's public release, the pinned source's date as a
    further release component and our build number (runtime.toml version_format):
    0.0.0+f1fabbd, 2026-02-18 and build 3 -> 0.0.0.20260218.post3. PEP 440 with no local part."""
    if not 0 <= build_number <= MAX_BUILD_NUMBER:    # 9 digits: the wheel's file name stays short
        shown = build_number if abs(build_number) < 10 ** 30 else f"a number of {build_number.bit_length()} bits"
        raise ConfigurationError(f"build number must be from 0 to {MAX_BUILD_NUMBER}, not {shown}")
    try:
        upstream = Version(release)
    except InvalidVersion:
        raise ConfigurationError(f"{release!r} is not a PEP 440 version; the recipe's version must be one") from None
    if "{date}" in version_format and not date:
        raise ConfigurationError(f"the wheel version ({version_format!r}) needs the application recipe's date")
    day = (date or "").replace("-", "")
    text = version_format.format(release=upstream.public, build_number=build_number, date=day)
    try:
        version = Version(text)
    except InvalidVersion:
        raise ConfigurationError(
            f"{release!r} with build {build_number} gives {text!r}, not a valid version "
            f"(format {version_format!r}); an upstream post-release cannot take another .post, "
            f"nor a pre-release a date component"
        ) from None
    if version.local is not None:
        raise ConfigurationError(f"{text!r} has a local part: indexes refuse it (format {version_format!r})")
    return str(version)


def normalized_name(distribution: str) -> str:
    """The distribution as wheel file names spell it (and auditwheel names <it>.libs)."""
    return canonicalize_name(distribution).replace("-", "_")


def entry_point_name(tool: str) -> str:
    """A Python identifier for a tool: moshi-tts -> moshi_tts."""
    name = re.sub(r"\W", "_", tool)
    if name[:1].isdigit():
        name = "_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def entry_points(tools: Sequence[str]) -> dict[str, str]:
    """identifier -> tool, refusing two tools that would share an identifier."""
    points: dict[str, str] = {}
    for tool in tools:
        ident = entry_point_name(tool)
        if ident in points:
            raise ConfigurationError(f"tools {points[ident]!r} and {tool!r} map to the same entry point {ident!r}")
        points[ident] = tool
    return points


def license_expression(expressions: Iterable[str]) -> str:
    """AND of the given SPDX expressions, each kept once, validated and canonical."""
    parts: list[str] = []
    for expr in expressions:
        expr = expr.strip()
        try:
            canon = canonicalize_license_expression(expr)
        except InvalidLicenseExpression as e:
            raise ConfigurationError(f"invalid SPDX license expression {expr!r}: {e}") from None
        if re.search(r"\s(OR|AND)\s", canon) and not (canon.startswith("(") and canon.endswith(")")):
            canon = f"({canon})"
        if canon not in parts:
            parts.append(canon)
    if not parts:
        raise ConfigurationError("no license: at least one component must be given")
    return canonicalize_license_expression(" AND ".join(parts))


def _toml(value) -> str:
    # JSON strings and arrays of strings are valid TOML values.
    return json.dumps(value, ensure_ascii=False)


def render_pyproject(template: str, *, name: str, version: str, summary: str, license: str,
                     keywords: Sequence[str], packages: Sequence[str], scripts: Mapping[str, str],
                     dependencies: Sequence[str] = (), urls: Mapping[str, str] | None = None,
                     rocm_stack: str | None = None) -> str:
    keywords = list(keywords) + ([f"rocm-{rocm_stack}"] if rocm_stack else [])
    script_lines = "\n".join(f"{_toml(script)} = {_toml(target)}" for script, target in scripts.items())
    text = string.Template(template).substitute(
        name=_toml(name), version=_toml(version), summary=_toml(summary), license=_toml(license),
        keywords=_toml(list(keywords)), packages=_toml(list(packages)), scripts=script_lines,
        dependencies=_toml(list(dependencies)),
        urls="{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in (urls or {}).items()) + "}",
    )
    tomllib.loads(text)  # a rendering bug fails here, not inside pip
    return text


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_readme(template: str, *, distribution: str, gpu_target: str, gpus: Sequence[str], package: str,
                  bin_dir: str, tools: Sequence[str], components: Sequence[Component],
                  system: Sequence[SystemPackage], base: str = "", version: str = "", target_package: str = "") -> str:
    comp_rows = "\n".join(f"| {_md(c.name)} | {_md(c.version)} | {_md(c.license)} |" for c in components)
    sys_rows = "\n".join(f"| {_md(p.package)} | {_md(p.version)} | {_md(p.license)} |" for p in system) \
        or "| (none) | | |"
    return string.Template(template).substitute(
        distribution=distribution, gpu_target=gpu_target,
        gpus=f" ({', '.join(gpus)})" if gpus else "",
        package=package, bin_dir=bin_dir, tools=", ".join(f"`{t}`" for t in tools),
        components_table=comp_rows, system_table=sys_rows, base=base, version=version,
        target_package=target_package,
    )


def upstream_info(recipe) -> dict:
    """What a wheel records of the application it is made of: its release, the pinned commit
    (full id, git sources) and the recipe's date."""
    source = recipe.source
    return {"name": recipe.name, "release": recipe.version, "commit": getattr(recipe, "commit", None),
            "date": recipe.date, "url": getattr(source, "url", None)}


# zip cannot store times before 1980-01-01 (the fallback when nothing pins a date)
def upstream_urls(upstream: Mapping) -> dict[str, str]:
    """Project-URL entries of the metadata: the application's source at the pinned commit."""
    url, commit = upstream.get("url"), upstream.get("commit")
    if not (url and commit and re.match(r"https://(github\.com|gitlab\.com)/", url)):
        return {}
    return {f"{upstream.get('name', 'upstream')} source": f"{url.rstrip('/').removesuffix('.git')}/tree/{commit}"}


def provenance_line(upstream: Mapping, rocm_stack: str | None) -> str:
    """One line: "moshi.cpp <commit> (<date>), ROCm stack 7.2" (what `moshi-rocm info` shows too)."""
    parts = []
    if upstream.get("name"):
        ref = upstream.get("commit") or upstream.get("release") or "?"
        parts.append(f"{upstream['name']} {ref}" + (f" ({upstream['date']})" if upstream.get("date") else ""))
    if rocm_stack:
        parts.append(f"ROCm stack {rocm_stack}")
    return ", ".join(parts)


def provenance_paragraph(upstream: Mapping, rocm_stack: str | None) -> str:
    """The README's (the metadata's description) last lines: what the wheel was built from."""
    line = provenance_line(upstream, rocm_stack)
    return f"\n## Built from\n\n{line}\n" if line else ""


def _known_gpus(gpu_target: str) -> list[str]:
    try:
        from builder.rocm.targets import load_targets
        return list(load_targets()[gpu_target].gpus)
    except Exception:  # the table is optional for the metadata
        return []


# The package's own command (doctor, info, selftest; python -m <package> does the same).
PACKAGE_COMMAND = ("moshi-rocm", "__main__:main")


def package_scripts(package: str, points: Mapping[str, str]) -> dict[str, str]:
    """Console scripts of the wheel: one per tool, plus the package's own command."""
    command, target = PACKAGE_COMMAND
    if command in points.values():
        raise ConfigurationError(f"a tool is called {command!r}, the name of the package's own command")
    scripts = {tool: f"{package}.tools:{ident}" for ident, tool in points.items()}
    scripts[command] = f"{package}.{target}"
    return scripts


def target_table_for_runtime(kernel_targets: Iterable[str] | None = None,
                             rocblas_label: str = "rocBLAS") -> dict[str, dict]:
    """What `moshi-rocm doctor` needs of targets.toml, for _runtime.json: per gfx target its
    KFD gfx_target_version, example GPUs and, where one applies, the target whose code it
    runs with HSA_OVERRIDE_GFX_VERSION; with `kernel_targets`, why a target has no wheel."""
    from builder.rocm.targets import load_targets

    kernels = set(kernel_targets) if kernel_targets is not None else None
    table = {}
    for t in load_targets():
        entry = {"gfx_target_version": t.gfx_target_version, "gpus": list(t.gpus)}
        if kernels is not None and t.name not in kernels:
            entry["no_wheel"] = f"{rocblas_label} ships no kernels for {t.name}"
        if t.runs_as:
            entry.update(runs_as=t.runs_as, hsa_override_gfx_version=t.hsa_override_gfx_version)
        table[t.name] = entry
    return table
