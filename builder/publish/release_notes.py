"""Release notes out of the data: for a wheelhouse, the wheels with their versions, the
components and the Debian packages they carry, read from each wheel's _runtime.json or
_target.json (Markdown)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from builder.errors import ConfigurationError
from builder.package.project import provenance_line

INFO_FILES = ("_runtime.json", "_target.json")
MAX_INFO_BYTES = 4 << 20        # ours are a few tens of KB


def wheel_info(path: Path) -> dict:
    """The JSON a wheel of ours carries at <package>/_runtime.json or <package>/_target.json."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.split("/")[1] in INFO_FILES]
            if len(names) != 1:
                raise ConfigurationError(f"{path.name}: expected one <package>/_runtime.json or _target.json, "
                                         f"found {len(names)}: not a moshi-build wheel")
            if zf.getinfo(names[0]).file_size > MAX_INFO_BYTES:
                raise ConfigurationError(f"{path.name}: its {names[0]} claims {zf.getinfo(names[0]).file_size} bytes; "
                                         "not a moshi-build wheel")
            with zf.open(names[0]) as f:
                info = json.loads(f.read(MAX_INFO_BYTES + 1))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, RuntimeError, NotImplementedError,
            ValueError, EOFError) as e:
        raise ConfigurationError(f"{path.name}: cannot read its wheel JSON ({e})") from None
    if not isinstance(info, dict):
        raise ConfigurationError(f"{path.name}: its {names[0]} is {type(info).__name__}, not a JSON object: "
                                 "not a moshi-build wheel")
    return info


def _records(info: dict, key: str) -> list[dict]:
    """A list of objects of the wheel JSON (hostile: anything else counts as empty)."""
    value = info.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _wheels(wheelhouse: Path) -> list[Path]:
    wheelhouse = Path(wheelhouse)
    paths = sorted(wheelhouse.glob("*.whl")) if wheelhouse.is_dir() else [wheelhouse]
    if not paths:
        raise ConfigurationError(f"{wheelhouse}: no wheels (*.whl)")
    return paths


def _md(text) -> str:
    return str(text).replace("|", "\\|")


def release_notes(wheelhouse: Path) -> str:
    """Markdown: a heading with the version(s), what they were built from, then tables of the wheels,
    the components (with the wheels that carry each) and the Debian packages."""
    rows, components, packages, versions, built_from = [], {}, {}, [], []
    for path in _wheels(wheelhouse):
        try:
            name, version, _, _ = parse_wheel_filename(path.name)
        except InvalidWheelFilename as e:
            raise ConfigurationError(f"{path.name}: {e}") from None
        info = wheel_info(path)
        dist = str(info.get("distribution") or name)
        kind = str(info.get("kind") or "single")
        label = f"{kind} ({info['gpu_target']})" if info.get("gpu_target") else kind
        rows.append((dist, str(version), label, path.stat().st_size, path.name))
        if str(version) not in versions:
            versions.append(str(version))
        upstream = info.get("upstream") if isinstance(info.get("upstream"), dict) else {}
        build = info.get("build") if isinstance(info.get("build"), dict) else {}
        line = provenance_line(upstream, build.get("rocm_stack"))
        if line and line not in built_from:
            built_from.append(line)
        for c in _records(info, "components"):
            components.setdefault((c.get("name"), c.get("version"), c.get("license")), []).append(dist)
        for p in _records(info, "system_packages"):
            packages.setdefault((p.get("package"), p.get("version"), p.get("license")), []).append(dist)

    out = [f"# moshi-rocm {', '.join(versions)}", ""]
    out += [f"Built from {line}." for line in built_from] + ([""] if built_from else [])
    out += ["## Wheels", "", "| distribution | version | kind | size | file |", "|---|---|---|---|---|"]
    out += [f"| {_md(d)} | {_md(v)} | {_md(k)} | {size / 1e6:.1f} MB | {_md(f)} |" for d, v, k, size, f in rows]
    out += ["", "## Components", "", "| component | version | license | in |", "|---|---|---|---|"]
    out += [f"| {_md(n)} | {_md(v)} | {_md(lic)} | {_md(', '.join(sorted(set(w))))} |"
            for (n, v, lic), w in sorted(components.items(), key=lambda kv: str(kv[0]))]
    out += ["", "## Debian packages", ""]
    if packages:
        out += ["| package | version | license | in |", "|---|---|---|---|"]
        out += [f"| {_md(n)} | {_md(v)} | {_md(lic)} | {_md(', '.join(sorted(set(w))))} |"
                for (n, v, lic), w in sorted(packages.items(), key=lambda kv: str(kv[0]))]
    else:
        out.append("(none)")
    return "\n".join(out) + "\n"
