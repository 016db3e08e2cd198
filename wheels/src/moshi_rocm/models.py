"""moshi-rocm models list | download NAME... | --all | verify [NAME...] | path | remove NAME...

The models the tools load, from the model lists of the moshi.cpp commit this wheel was
built from (models.json, written by moshi-build from the source's tools/*.txt). They go to
one folder: MODEL_CACHE when it is set, else the user's cache folder
($XDG_CACHE_HOME/moshi-rocm/models, ~/.cache/moshi-rocm/models); the console scripts point
the tools at the same folder, so `moshi-tts "Hello"` finds what `models download` fetched.

download: a few files at once; each into NAME.part, resumed with an HTTP range request,
retried with backoff on a dropped connection, a timeout or a 5xx answer, and renamed to
its final name only after its checksum from the list matched; the free space is checked
against the sizes the server gives before anything starts; Ctrl-C keeps the partial files.
A file is written up to the size the server gives (the answer's Content-Length, else a HEAD's,
else MAX_FILE) and no further. HF_TOKEN is sent to the models' host and never follows a
redirect to another host; HF_ENDPOINT (a mirror) replaces that host in every URL;
MOSHI_ROCM_OFFLINE=1 (or HF_HUB_OFFLINE=1) refuses to touch the network.

Exit codes: 0 done, 2 bad arguments (an unknown model), 3 checksum mismatch, 4 download
failed (404, 5xx, timeout), 5 not enough space, 6 folder not writable, 7 offline,
130 interrupted. Standard library only; keep it importable on Python 3.9.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

PACKAGE_DIR = Path(__file__).resolve().parent
MODELS_FILE = "models.json"
CACHE_ENV = "MODEL_CACHE"
OFFLINE_ENVS = ("MOSHI_ROCM_OFFLINE", "HF_HUB_OFFLINE")
HOST = "https://huggingface.co"            # the host the lists name; HF_ENDPOINT replaces it
CHUNK = 1 << 20
JOBS = 3
RETRIES = 4
TIMEOUT = 30
MAX_JOBS = 16
MAX_FILE = 64 << 30     # what one file may grow to when neither the GET nor a HEAD gives its size
EXIT_USAGE, EXIT_CHECKSUM, EXIT_NETWORK, EXIT_SPACE, EXIT_FOLDER, EXIT_OFFLINE, EXIT_INTERRUPTED = 2, 3, 4, 5, 6, 7, 130
_PART = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")


class ModelsError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def model_folder(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "moshi-rocm" / "models"


def load(package_dir: Path = PACKAGE_DIR) -> dict:
    """models.json, its entries checked again (it is data from a list we did not write)."""
    path = Path(package_dir) / MODELS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelsError("this wheel carries no model lists (%s is missing)" % path, EXIT_USAGE) from None
    except (OSError, ValueError, RecursionError) as e:
        raise ModelsError("%s is unreadable: %s; reinstall the wheel" % (path, str(e)[:200]), EXIT_USAGE) from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise ModelsError("%s has no models; reinstall the wheel" % path, EXIT_USAGE)
    for name, model in models.items():
        if not isinstance(model, dict) or not isinstance(model.get("files"), list):
            raise ModelsError("%s: model %r is not an object with a list of files; reinstall the wheel"
                              % (path, name[:80]), EXIT_USAGE)
        for f in model["files"]:
            check_entry(name, f)
    tools = doc.get("tools", {})
    if not isinstance(tools, dict) or not all(isinstance(t, dict) for t in tools.values()):
        raise ModelsError("%s: its tools are not an object of objects; reinstall the wheel" % path, EXIT_USAGE)
    return doc


def check_entry(name: str, entry) -> None:
    ok = isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry["url"].startswith("https://") \
        and isinstance(entry.get("out"), str) and entry.get("algorithm") in ("sha256", "sha1") \
        and isinstance(entry.get("digest"), str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", entry["digest"]) \
        and all(p not in (".", "..") and _PART.fullmatch(p) for p in entry["out"].split("/"))
    if not ok:
        raise ModelsError("model %s: refusing the list entry %r (not an https URL with a plain relative out= "
                          "path and a checksum); reinstall the wheel" % (name[:80], str(entry)[:160]), EXIT_USAGE)


def pick(doc: dict, names: Sequence[str], everything: bool) -> List[str]:
    models = doc["models"]
    if everything:
        return sorted(models)
    unknown = [n for n in names if n not in models]
    if unknown or not names:
        raise ModelsError("%s: the models are %s" % (
            "unknown model %r" % unknown[0] if unknown else "name a model (or --all)", ", ".join(sorted(models))),
            EXIT_USAGE)
    return list(dict.fromkeys(names))


def files_of(doc: dict, names: Sequence[str]) -> List[dict]:
    """The files of these models, each once (lists share files: mimi, the tokenizer)."""
    seen: Dict[str, dict] = {}
    for n in names:
        for f in doc["models"][n]["files"]:
            seen.setdefault(f["out"], f)
    return list(seen.values())


def state(folder: Path, entry: dict) -> str:
    dest = folder / entry["out"]
    if dest.is_file():
        return "present"
    if part_of(dest).is_file():
        return "partial"
    return "missing"


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def endpoint_url(url: str, environ) -> str:
    """HF_ENDPOINT replaces the lists' host (a mirror, or a local server in the tests)."""
    endpoint = (environ.get("HF_ENDPOINT") or "").rstrip("/")
    if endpoint and url.startswith(HOST + "/"):
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?", endpoint):
            raise ModelsError("HF_ENDPOINT=%r is not an http(s) URL" % endpoint[:100], EXIT_USAGE)
        return endpoint + url[len(HOST):]
    return url


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Redirects that keep HF_TOKEN (the Authorization header) only while the scheme, host and port
    stay the same: a mirror or the models' host may send the download to another host (a CDN), which
    gets the file's URL but never the token. A HEAD stays a HEAD."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        if req.get_method() == "HEAD":
            new.method = "HEAD"
        old, to = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)
        if (old.scheme, old.hostname, old.port) != (to.scheme, to.hostname, to.port):
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_SameOriginAuth)


def _open(req: urllib.request.Request):
    return _OPENER.open(req, timeout=TIMEOUT)


def _request(url: str, environ, method: str = "GET", offset: int = 0) -> urllib.request.Request:
    req = urllib.request.Request(url, method=method, headers={"User-Agent": "moshi-rocm"})
    if offset:
        req.add_header("Range", "bytes=%d-" % offset)
    token = environ.get("HF_TOKEN")
    host = urllib.parse.urlsplit(url).hostname or ""
    allowed = {"huggingface.co", urllib.parse.urlsplit(environ.get("HF_ENDPOINT") or "").hostname}
    if token and host in allowed:
        req.add_header("Authorization", "Bearer %s" % token)
    return req


def remote_size(entry: dict, environ) -> Optional[int]:
    try:
        with _open(_request(endpoint_url(entry["url"], environ), environ, "HEAD")) as r:
            length = r.headers.get("Content-Length", "")
            return int(length) if length.isascii() and length.isdigit() else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Progress:
    """A bar per running file and one for the total on a terminal; a line per finished file otherwise."""

    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.files: Dict[str, Tuple[int, Optional[int]]] = {}
        self.lock = threading.Lock()
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.drawn, self.last = 0, 0.0

    def update(self, name: str, got: int, size: Optional[int], delta: int) -> None:
        with self.lock:
            self.files[name] = (got, size)
            self.done += delta
            if self.tty and time.monotonic() - self.last > 0.2:
                self._draw()

    def finish(self, name: str, line: str) -> None:
        with self.lock:
            self.files.pop(name, None)
            if self.tty:
                self._clear()
            print(line, file=self.stream)
            if self.tty:
                self._draw()

    def _bar(self, got: int, size: Optional[int]) -> str:
        if not size:
            return "%8.1f MB" % (got / 1e6)
        filled = int(30 * min(got, size) / size)
        return "[%s%s] %3d%% %8.1f/%.1f MB" % ("#" * filled, "." * (30 - filled), 100 * got // size, got / 1e6,
                                               size / 1e6)

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write("\x1b[%dA\x1b[J" % self.drawn)
            self.drawn = 0

    def _draw(self) -> None:
        self._clear()
        lines = ["%-40.40s %s" % (n, self._bar(g, s)) for n, (g, s) in sorted(self.files.items())]
        lines.append("%-40.40s %s" % ("total", self._bar(self.done, self.total or None)))
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.drawn, self.last = len(lines), time.monotonic()


def _hash_of(path: Path, algorithm: str, h=None):
    h = h or hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h


def fetch(entry: dict, folder: Path, environ, progress: Progress, stop: threading.Event,
          sleep: Callable[[float], None] = time.sleep, expected: Optional[int] = None) -> None:
    """One file: resumed into .part, checked, renamed. ModelsError on what retrying cannot fix.
    `expected`: the size a HEAD gave, the most that is written when the GET does not say."""
    dest = folder / entry["out"]
    part = part_of(dest)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _folder_error(e, part.parent) from None
    url = endpoint_url(entry["url"], environ)
    for attempt in range(RETRIES + 1):
        offset = part.stat().st_size if part.exists() else 0
        try:
            _transfer(url, part, offset, entry, environ, progress, stop, expected)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:       # the part is whole already
                break
            if e.code < 500 or attempt == RETRIES:
                raise ModelsError("%s: HTTP %d %s from %s" % (entry["out"], e.code, e.reason, url), EXIT_NETWORK) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ModelsError("no space left in %s while writing %s: the partial file is kept; free some space "
                                  "and run the same command to resume" % (folder, part.name), EXIT_SPACE) from None
            if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise _folder_error(e, part.parent) from None
            if attempt == RETRIES:
                raise ModelsError("%s: %s from %s after %d tries; the partial file is kept: run the same command "
                                  "to resume" % (entry["out"], getattr(e, "reason", e), url, RETRIES + 1),
                                  EXIT_NETWORK) from None
        if stop.is_set():
            return
        sleep(min(0.5 * 2 ** attempt, 8))
    if stop.is_set():
        return
    digest = _hash_of(part, entry["algorithm"]).hexdigest()
    if digest != entry["digest"]:
        part.unlink()
        raise ModelsError("%s: checksum mismatch (%s %s, the list says %s); the file was removed"
                          % (entry["out"], entry["algorithm"], digest, entry["digest"]), EXIT_CHECKSUM)
    os.replace(part, dest)
    progress.finish(entry["out"], "done: %s" % entry["out"])


def _transfer(url: str, part: Path, offset: int, entry: dict, environ, progress: Progress,
              stop: threading.Event, expected: Optional[int] = None) -> None:
    with _open(_request(url, environ, offset=offset)) as r:
        if offset and r.status != 206:        # the server ignored the range: start again
            offset = 0
        length = r.headers.get("Content-Length", "")
        size = offset + int(length) if length.isascii() and length.isdigit() and len(length) < 20 else None
        # The list gives no sizes: the most one file may take is what the server says (this answer's
        # Content-Length, else a HEAD's), else MAX_FILE.
        limit = size if size is not None else expected if expected is not None else MAX_FILE
        limit = min(limit, MAX_FILE)
        with open(part, "ab" if offset else "wb") as out:
            got = offset
            progress.update(entry["out"], got, size, 0)
            while not stop.is_set():
                chunk = r.read(max(0, min(CHUNK, limit - got)) + 1)
                if not chunk:
                    break
                if got + len(chunk) > limit:
                    out.write(chunk[: limit - got])
                    out.close()
                    part.unlink()
                    raise ModelsError("%s: %s sends more than %d bytes%s; the partial file was removed"
                                      % (entry["out"], url, limit,
                                         "" if limit == MAX_FILE else ", the size it gave"), EXIT_NETWORK)
                out.write(chunk)
                got += len(chunk)
                progress.update(entry["out"], got, size, len(chunk))
        if size is not None and got < size and not stop.is_set():
            raise ConnectionError("connection closed at %d of %d bytes" % (got, size))


def _folder_error(e: OSError, folder: Path) -> ModelsError:
    return ModelsError("cannot write in the model folder %s (%s): set %s to a folder you can write, or fix its "
                       "permissions" % (folder, e.strerror or e, CACHE_ENV), EXIT_FOLDER)


def download(doc: dict, names: Sequence[str], folder: Path, environ, jobs: int = JOBS,
             stream=sys.stderr) -> int:
    entries = [e for e in files_of(doc, names) if state(folder, e) != "present"]
    if not entries:
        print("everything of %s is present in %s" % (", ".join(names), folder), file=stream)
        return 0
    if any(environ.get(v) == "1" for v in OFFLINE_ENVS):
        raise ModelsError("offline (%s=1): %d files of %s are missing in %s" % (
            next(v for v in OFFLINE_ENVS if environ.get(v) == "1"), len(entries), ", ".join(names), folder), EXIT_OFFLINE)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _folder_error(e, folder) from None
    if not os.access(str(folder), os.W_OK):
        raise _folder_error(PermissionError(errno.EACCES, "not writable"), folder)
    sizes = [remote_size(e, environ) for e in entries]
    have = sum(part_of(folder / e["out"]).stat().st_size for e in entries if part_of(folder / e["out"]).exists())
    needed = sum(s for s in sizes if s) - have
    free = shutil.disk_usage(str(folder)).free
    if needed > free:
        raise ModelsError("%s needs %.1f GB more, but %s has %.1f GB free; free some space or set %s elsewhere"
                          % (", ".join(names), needed / 1e9, folder, free / 1e9, CACHE_ENV), EXIT_SPACE)
    print("downloading %d files (%.1f GB) of %s into %s" % (len(entries), sum(s for s in sizes if s) / 1e9,
                                                            ", ".join(names), folder), file=stream)
    progress = Progress(sum(s for s in sizes if s), stream)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = [pool.submit(fetch, e, folder, environ, progress, stop, expected=s) for e, s in zip(entries, sizes)]
    try:
        for f in futures:
            while True:
                try:
                    f.result(timeout=0.2)
                    break
                except FutureTimeout:
                    continue
    except KeyboardInterrupt:
        stop.set()
        pool.shutdown(wait=True)
        raise ModelsError("interrupted: partial files are kept in %s; run the same command to resume" % folder,
                          EXIT_INTERRUPTED) from None
    except ModelsError:
        stop.set()
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
    print("%s: every file is present and matches its checksum" % ", ".join(names), file=stream)
    return 0


def verify(doc: dict, names: Sequence[str], folder: Path, stream=sys.stdout) -> int:
    bad = 0
    for e in files_of(doc, names):
        dest = folder / e["out"]
        if not dest.is_file():
            continue
        ok = _hash_of(dest, e["algorithm"]).hexdigest() == e["digest"]
        bad += not ok
        print("%s %s" % ("ok  " if ok else "BAD ", e["out"]), file=stream)
    return EXIT_CHECKSUM if bad else 0


def remove(doc: dict, names: Sequence[str], folder: Path, stream=sys.stdout) -> int:
    keep = {f["out"] for n, m in doc["models"].items() if n not in names for f in m["files"]}
    removed = 0
    for e in files_of(doc, names):
        if e["out"] in keep:
            continue                  # another model's file too (mimi, the tokenizer)
        for p in (folder / e["out"], part_of(folder / e["out"])):
            if p.is_file():
                p.unlink()
                removed += 1
    print("removed %d files of %s from %s" % (removed, ", ".join(names), folder), file=stream)
    return 0


def list_models(doc: dict, folder: Path, stream=sys.stdout, names: Sequence[str] = (), environ=None,
                sizes: bool = False) -> int:
    """Each model (or those named): present, partial or missing, its files, and with `sizes` the
    total the server gives (HEAD requests; "size unknown" where it does not say)."""
    defaults = {t["model"]: tool for tool, t in (doc.get("tools") or {}).items() if isinstance(t, dict)}
    chosen = pick(doc, names, not names)
    remote = _remote_sizes(files_of(doc, chosen), environ if environ is not None else os.environ) if sizes else {}
    print("model folder: %s" % folder, file=stream)
    for name in sorted(chosen):
        files = doc["models"][name]["files"]
        states = [state(folder, f) for f in files]
        status = "present" if all(s == "present" for s in states) else \
            "missing" if all(s == "missing" for s in states) else "partial"
        used = " (the default of %s)" % defaults[name] if name in defaults else ""
        size = ""
        if sizes:
            known = [remote.get(f["url"]) for f in files]
            size = "  %.2f GB" % (sum(k for k in known if k) / 1e9) if all(known) else "  size unknown"
        print("%-28s %-8s %d files%s%s" % (name, status, len(files), size, used), file=stream)
    return 0


def _remote_sizes(entries: Sequence[dict], environ) -> Dict[str, int]:
    """url -> the size the server gives (a few HEAD requests at once); offline refuses."""
    if any(environ.get(v) == "1" for v in OFFLINE_ENVS):
        raise ModelsError("offline (%s=1): the sizes come from the server; list without --sizes"
                          % next(v for v in OFFLINE_ENVS if environ.get(v) == "1"), EXIT_OFFLINE)
    from concurrent.futures import ThreadPoolExecutor

    urls = {e["url"]: e for e in entries}
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = dict(zip(urls, pool.map(lambda e: remote_size(e, environ), urls.values())))
    return {url: size for url, size in found.items() if size is not None}


def _relative_folder(name: str) -> bool:
    """A folder below the model folder: relative, no '.' or '..' part (models.json is the wheel's, but checked)."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def missing_default(tool: str, args: Sequence[str], environ, package_dir: Path = PACKAGE_DIR) -> Optional[str]:
    """Why `tool` will not find its default model (and which command fetches it), or None."""
    if any(a in ("-m", "--model", "-r", "--model-root", "-h", "--help", "-l", "--list")
           or a.startswith(("--model=", "--model-root=")) for a in args):
        return None
    try:
        doc = load(package_dir)
    except ModelsError:
        return None
    entry = (doc.get("tools") or {}).get(tool)
    if not isinstance(entry, dict) or not isinstance(entry.get("folder"), str):
        return None
    folder = entry["folder"]
    # the folders the tool also loads a model from (its source's fallbacks), when the list says so
    also = entry.get("also") if isinstance(entry.get("also"), list) else []
    folders = [folder] + [f for f in also if isinstance(f, str) and _relative_folder(f)]
    places = [model_folder(environ), Path.cwd(), Path(package_dir) / "bin"]
    if any((p / f).is_dir() for p in places for f in folders):
        return None
    return ("%s's default model %s is not in %s: moshi-rocm models download %s"
            % (tool, folder, model_folder(environ), entry.get("model")))


def _jobs(value: str) -> int:
    import argparse

    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_JOBS):
        raise argparse.ArgumentTypeError("%r: give a number of files at once from 1 to %d" % (value[:20], MAX_JOBS))
    return int(value)


def main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="moshi-rocm models", description=__doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="each model, and whether it is present, partial or missing")
    ls.add_argument("names", nargs="*")
    ls.add_argument("--sizes", action="store_true", help="ask the server for each model's total size")
    d = sub.add_parser("download", help="download models (resumable)")
    d.add_argument("names", nargs="*")
    d.add_argument("--all", action="store_true")
    d.add_argument("--jobs", type=_jobs, default=JOBS, help="files at once, 1 to %d (default %d)" % (MAX_JOBS, JOBS))
    v = sub.add_parser("verify", help="hash what is present again")
    v.add_argument("names", nargs="*")
    sub.add_parser("path", help="print the model folder")
    r = sub.add_parser("remove", help="remove models' files (not those another model shares)")
    r.add_argument("names", nargs="+")
    args = parser.parse_args(list(argv))
    folder = model_folder()
    try:
        if args.command == "path":
            print(folder)
            return 0
        doc = load()
        if args.command == "list":
            return list_models(doc, folder, names=args.names, sizes=args.sizes)
        if args.command == "download":
            return download(doc, pick(doc, args.names, args.all), folder, os.environ, args.jobs)
        if args.command == "verify":
            return verify(doc, pick(doc, args.names, not args.names), folder)
        return remove(doc, pick(doc, args.names, False), folder)
    except ModelsError as e:
        print("moshi-rocm models: %s" % e, file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("moshi-rocm models: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
