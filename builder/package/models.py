"""The application's model lists, shipped in the base wheel as data (runtime.toml [models]).

moshi.cpp keeps its models' download lists in tools/*.txt: aria2c input files, one
entry per file (its URL on a line of its own, then indented `key=value` options, among
them `out=` the path under the model folder and `checksum=sha-256=...` or `sha-1=...`).
They are read from the fetched source when a wheel is made (never copied into this
repository), checked as hostile input, and written as the base wheel's models.json,
which `moshi-rocm models` reads:

    {"schema": 1, "source": "moshi.cpp f1fabbd...",
     "models": {"tts-1.6b-en_fr": {"list": "Codes4Fun_tts-1.6b-en_fr-GGUF.txt",
                                   "files": [{"url": ..., "out": ..., "algorithm": "sha256", "digest": ...}]}},
     "tools": {"moshi-tts": {"folder": "Codes4Fun/tts-1.6b-en_fr-GGUF", "model": "tts-1.6b-en_fr",
                             "also": ["kyutai/tts-1.6b-en_fr"]}}}

"also" (the recipe's [models] also) names folders the tool falls back to when its default is
absent; the launcher's missing-model line counts a model in any of them.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from builder.errors import BuildStepError

MAX_LIST_BYTES = 1 << 20          # a list of a few dozen files is a few KiB
MAX_ENTRIES = 2000
_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[^\s\"<>\\\x00-\x1f\x7f]{0,2000}")
_PART = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")
_DIGESTS = {"sha-256": ("sha256", 64), "sha-1": ("sha1", 40)}


def _fail(list_name: str, line: int, why: str) -> BuildStepError:
    return BuildStepError(f"model list {list_name!r}, line {line}: {why}; the pinned moshi.cpp must be checked "
                          "(or the entry left out with a patch in patches/moshi.cpp)")


def safe_out(value: str, list_name: str, line: int) -> str:
    """An out= path: relative, plain parts only, never leaving the model folder."""
    path = PurePosixPath(value)
    if not value or value.startswith("/") or "\\" in value or path.is_absolute() \
            or any(p in ("", ".", "..") or not _PART.fullmatch(p) for p in value.split("/")):
        raise _fail(list_name, line, f"out={value[:120]!r} is not a plain relative path inside the model folder")
    return value


def parse_list(text: str, list_name: str) -> list[dict]:
    """The entries of one aria2c input file; BuildStepError naming the line of a hostile one."""
    entries: list[dict] = []
    current: dict | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if not raw[0].isspace():                           # a URL line starts an entry
            url = raw.strip().split("\t")[0]
            if not _URL.fullmatch(url):
                raise _fail(list_name, number, f"{url[:120]!r} is not an https URL")
            current = {"url": url, "line": number}
            entries.append(current)
            if len(entries) > MAX_ENTRIES:
                raise _fail(list_name, number, f"more than {MAX_ENTRIES} entries")
            continue
        if current is None:
            raise _fail(list_name, number, "an option before any URL")
        key, sep, value = raw.strip().partition("=")
        if not sep:
            raise _fail(list_name, number, f"{raw.strip()[:80]!r} is not key=value")
        if key == "out":
            current["out"] = safe_out(value, list_name, number)
        elif key == "checksum":
            kind, _, digest = value.partition("=")
            algorithm, length = _DIGESTS.get(kind, (None, 0))
            if algorithm is None or not re.fullmatch(f"[0-9a-f]{{{length}}}", digest):
                raise _fail(list_name, number, f"checksum={value[:90]!r} is not sha-256=<64 hex> or sha-1=<40 hex>")
            current["algorithm"], current["digest"] = algorithm, digest
    for e in entries:
        if "out" not in e:
            raise _fail(list_name, e["line"], f"{e['url'][:100]} has no out=")
    return [{"url": e["url"], "out": e["out"], "algorithm": e.get("algorithm"), "digest": e.get("digest")}
            for e in entries]


def model_name(stem: str) -> str:
    """Codes4Fun_tts-1.6b-en_fr-GGUF -> tts-1.6b-en_fr (the owner and the format dropped)."""
    name = stem.split("_", 1)[1] if re.match(r"^[A-Za-z0-9-]+_", stem) else stem
    return re.sub(r"-GGUF$", "", name)


def collect(source: Path, patterns: Sequence[str], tools: Mapping[str, str], upstream: str = "",
            also: Mapping[str, Sequence[str]] | None = None) -> dict:
    """models.json from the lists in the application's source tree `source`.

    patterns: globs of the lists (runtime.toml [models] lists), relative to the source tree;
    tools:    tool -> the folder of its default model (runtime.toml [models.tools]): each must be
              a folder the lists fill, or the build stops (the pinned moshi.cpp moved its models)."""
    source = Path(source)
    files = sorted({p for pattern in patterns for p in source.glob(pattern)
                    if p.is_file() and not p.is_symlink() and p.resolve().is_relative_to(source.resolve())},
                   key=lambda p: (not p.stem.endswith("-GGUF"), p.name))
    if not files:
        raise BuildStepError(f"no model list matches {', '.join(patterns)} in {source}")
    models: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for path in files:
        if path.stat().st_size > MAX_LIST_BYTES:
            raise BuildStepError(f"model list {path.name!r} is larger than {MAX_LIST_BYTES} bytes")
        entries = parse_list(path.read_text(encoding="utf-8", errors="replace"), path.name)
        unverified = [e["out"] for e in entries if not e["digest"]]
        if unverified:   # nothing is downloaded that cannot be checked
            skipped[path.name] = f"{len(unverified)} of its {len(entries)} files have no checksum (e.g. {unverified[0]})"
            continue
        if not entries:
            continue
        name = model_name(path.stem)
        if name in models:
            name = path.stem
        models[name] = {"list": path.name, "files": entries}
    chosen: dict[str, dict] = {}
    for tool, folder in sorted(tools.items()):
        prefix = folder.rstrip("/") + "/"
        having = [n for n, m in models.items() if any(f["out"].startswith(prefix) for f in m["files"])]
        if not having:
            raise BuildStepError(f"{tool}'s default model {folder} is in none of the model lists "
                                 f"({', '.join(sorted(models))}); update runtime.toml [models.tools]")
        # the smallest list that fills the folder: the tool's own (a defaults list fills every folder)
        best = min(having, key=lambda n: (len(models[n]["files"]), n))
        chosen[tool] = {"folder": folder.rstrip("/"), "model": best}
        if (also or {}).get(tool):   # folders the tool falls back to (read in its source)
            chosen[tool]["also"] = [f.rstrip("/") for f in also[tool]]
    return {"schema": 1, "source": upstream, "models": models, "tools": chosen, "skipped": skipped}

