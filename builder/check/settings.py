"""What `moshi-build verify` looks for: resources/verify.toml and the build machine's directories.

  VerifySettings      verify.toml: the libraries that must carry device code, the markers of
                      a build path, the CPU backends a wheel must carry
  build_path_needles  the strings no member may contain (see its docstring for what counts)
  default_build_paths the build directories known on this machine (the CLI's default)
  build_dirs_of       the directories a pipeline build used (the pipeline's own verify)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable

from builder.common import resources
from builder.sources.recipe import PROJECT_ROOT


MAX_ELF_EXTRACT = 512 << 20


@dataclasses.dataclass(frozen=True)
class VerifySettings:
    device_code: tuple[str, ...]
    path_markers: tuple[str, ...]
    min_components: int
    backends: tuple[tuple[str, int, str], ...] = ()     # (pattern, min count, why)
    # The largest ELF member written out (to TMPDIR) to be examined; a larger one fails the archive
    # check unexamined. Ours are at most about 100 MB (rocBLAS); a 1 GiB one is not a library of ours.
    max_elf_extract: int = MAX_ELF_EXTRACT


def load_settings() -> VerifySettings:
    data = resources.load("verify")
    backends = tuple((b["pattern"], int(b.get("min", 1)), b.get("why", ""))
                     for b in data.get("backends", {}).get("required", ()))
    return VerifySettings(tuple(data["device_code"]["libraries"]), tuple(data["build_paths"]["markers"]),
                          int(data["build_paths"]["min_components"]), backends)


def build_path_needles(paths: Iterable[Path | str], settings: VerifySettings) -> tuple[list[str], list[str]]:
    """(strings to search for, directories left out as too generic).

    A path of the build machine is any string that starts with one of the
    build's own directories (given by the caller: cache root, source trees,
    step prefixes, build root, project checkout) or contains one of the
    markers of verify.toml (the default cache location of any user, so a wheel
    built elsewhere is caught too). Directories with fewer than min_components
    components (/, /tmp, /build) are not searched: Debian's own libraries name
    /build/... and /tmp/... legitimately.
    """
    needles, generic = [], []
    for p in paths:
        text = os.path.normpath(os.path.abspath(str(p)))
        if len([c for c in text.split("/") if c]) < settings.min_components:
            generic.append(text)
        else:
            needles.append(text)
    needles += list(settings.path_markers)
    # One needle that contains another one adds nothing.
    unique = sorted(set(needles), key=len)
    kept = [n for i, n in enumerate(unique) if not any(m in n for m in unique[:i])]
    return kept, sorted(set(generic))


def default_build_paths(cache_root: Path | None = None) -> list[Path]:
    """The build directories known on this machine: the cache root, the project checkout and,
    from CACHE/last-build.json, the step prefixes of the last build."""
    from builder.common.cache import default_cache_root

    root = Path(cache_root or default_cache_root())
    paths = [root, PROJECT_ROOT]
    record = root / "last-build.json"
    try:
        for step in json.loads(record.read_text()).get("steps", []):
            if step.get("prefix"):
                paths.append(Path(step["prefix"]))
    except (OSError, ValueError):
        pass
    return paths


def build_dirs_of(report, runtime_root: Path | None = None) -> list[Path]:
    """The directories a pipeline.BuildReport's build used: source trees, step prefixes, the cache
    root holding them (with the build trees under work/), the build root and the project checkout."""
    paths = [t.path for t in report.trees] + [r.prefix for r in report.results]
    paths += [r.prefix.parent.parent for r in report.results]      # CACHE/builds/<step>-<key>
    if runtime_root is not None and Path(runtime_root) != Path("/"):
        paths.append(Path(runtime_root))
    return list(dict.fromkeys(paths + [PROJECT_ROOT]))
