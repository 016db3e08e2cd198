"""Get each component's source: verified bytes in, patched tree out.

Lookup order for a pinned archive or sdist: the content-addressed cache, then
each --mirror directory (by file name), then the network (unless --offline).
Every candidate is hashed before use; nothing enters the cache unverified.
A `--source NAME=PATH` override replaces the pinned source with a local
directory or archive and is recorded as unverified.

One process at a time writes a cache entry (a download, a git repository, a
source tree): it holds the entry's lock (Cache.entry_lock); a second run waits,
then finds the entry made and verifies it. Extracted trees carry a manifest
(builder/sources/manifest.py) checked on every use: a tree changed after it was
made is not built from (exit 4, the message says to delete it; the next run
makes it again from the verified archive).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from builder.common.cache import Cache, disk_full_as_error, staging_dir
from builder.common.files import file_lock, sha256_file, write_atomic
from builder.sources.download import MAX_DOWNLOAD, download
from builder.errors import (ChecksumMismatchError, ConfigurationError, DiskFullError, DownloadError,
                            FileAccessError, OfflineError, shorten)
from builder.sources.extract import extract_archive, source_root
from builder.sources import manifest
from builder.sources.patching import apply_patches
from builder.sources import debian_archive
from builder.sources import pypi
from builder.sources.recipe import ArchiveSource, DebianSource, GitSource, LocalSource, PypiSource, Recipe

MIRROR_ENV = "MOSHI_BUILD_MIRROR"
OFFLINE_ENV = "MOSHI_BUILD_OFFLINE"


@dataclasses.dataclass
class FetchOptions:
    cache: Cache
    mirrors: tuple[Path, ...] = ()
    overrides: dict[str, Path] = dataclasses.field(default_factory=dict)
    offline: bool = False
    progress: bool = True
    # Root filesystems whose apt sources name Debian archives (debian source kind):
    # this machine, and the build root once it exists.
    apt_roots: tuple[Path, ...] = (Path("/"),)
    # The most one download may bring (bytes) when the recipe pins no size.
    max_download: int = MAX_DOWNLOAD


@dataclasses.dataclass(frozen=True)
class SourceTree:
    """A patched source tree ready to build, and where its bytes came from."""

    component: str
    version: str
    path: Path
    key: str  # changes whenever the tree's content can change
    origin: str
    pin: str  # sha256 of the archive or the git commit id
    verified: bool
    patches: tuple[str, ...]

    def lock_entry(self) -> dict:
        return {
            "component": self.component,
            "version": self.version,
            "origin": self.origin,
            "pin": self.pin,
            "verified": self.verified,
            "patches": list(self.patches),
            "tree_key": self.key,
        }


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_overrides(values: list[str]) -> dict[str, Path]:
    overrides: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigurationError(f"--source {shorten(repr(value))}: expected NAME=PATH, "
                                     "e.g. --source moshi.cpp=~/src/moshi.cpp")
        try:
            p = Path(path).expanduser().resolve()
            exists = p.exists()     # stat only: a FIFO or a device is never opened here
        except (OSError, RuntimeError) as e:  # a name too long, a link loop
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigurationError(f"--source {shorten(name)}={shorten(path)}: {reason}") from None
        if not exists:
            raise ConfigurationError(f"--source {shorten(name)}={shorten(path)}: {shorten(p)} does not exist")
        if not (p.is_dir() or p.is_file()):     # a FIFO would block, a device would not end
            raise ConfigurationError(f"--source {shorten(name)}={shorten(path)}: {shorten(p)} is neither a "
                                     "directory nor a regular file; name a source checkout or an archive")
        overrides[name] = p
    return overrides


def mirrors_from_env() -> tuple[Path, ...]:
    value = os.environ.get(MIRROR_ENV, "")
    return tuple(Path(p).expanduser() for p in value.split(os.pathsep) if p)


def check_mirrors(given: tuple[Path, ...], from_env: tuple[Path, ...] = ()) -> tuple[Path, ...]:
    """The mirror directories, resolved; a missing one (a typo) is refused instead of ignored."""
    found = []
    for path, where in [(p, "--mirror") for p in given] + [(p, MIRROR_ENV) for p in from_env]:
        try:
            resolved = Path(path).expanduser().resolve()
            is_dir = resolved.is_dir()
        except (OSError, RuntimeError):
            is_dir = False
        if not is_dir:
            what = "is not a directory" if os.path.lexists(str(path)) else "does not exist"
            raise ConfigurationError(f"{where} {shorten(path)}: {what}; name a directory holding "
                                     "the source archives, or leave it out")
        found.append(resolved)
    return tuple(found)


def _checksum_error(what: str, path: Path, expected: str, actual: str, advice: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"{what} {path} has sha256 {actual}, but the recipe pins {expected}; {advice}"
    )


def _verified_file(path: Path, expected: str, what: str, advice: str) -> Path:
    actual = sha256_file(path)
    if actual != expected:
        raise _checksum_error(what, path, expected, actual, advice)
    return path


def _copy_into_cache(src: Path, dest: Path, sha256: str) -> None:
    """Copy a verified mirror file into the cache: into dest.part, verified, renamed (the
    caller holds the entry's lock, so the .part is its own)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.parent / (dest.name + ".part")
    try:
        with disk_full_as_error(dest.parent):
            shutil.copyfile(src, part)
        # Verify the copy too: what is in the cache is what gets used.
        _verified_file(part, sha256, "copy of the mirrored file", f"check the disk holding {dest.parent}")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _kind_of(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing"
    if stat.S_ISLNK(mode):
        return "a directory link" if path.is_dir() else ("a file link" if path.is_file() else "a broken link")
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a file"
    return "a device or other special file"


def _cached_file(cached: Path, sha256: str) -> bool:
    """True if the cache holds the verified file; a damaged entry is ChecksumMismatchError."""
    if not os.path.lexists(cached):
        return False
    if not cached.is_file():
        raise ChecksumMismatchError(
            f"the cache entry {cached} is {_kind_of(cached)}, not a file: the cache is corrupted; "
            f"delete it (rm -r {cached}) and fetch again"
        )
    _verified_file(cached, sha256, "cached file",
                   f"the cache is corrupted: delete it (rm {cached}) and fetch again")
    return True


def _from_mirror(mirror: Path, source, component: str) -> Path | None:
    """The mirror's verified copy of the file, or None if the mirror does not hold it."""
    candidate = Path(mirror) / source.filename
    if not os.path.lexists(candidate):
        return None
    if not candidate.is_file():
        raise ConfigurationError(
            f"{component}: the mirror {mirror} holds {source.filename}, but it is {_kind_of(candidate)}, "
            "not a file; put the archive itself there, or remove the entry"
        )
    try:
        _verified_file(candidate, source.sha256, "mirrored file",
                       "replace it with the upstream file, or remove it from the mirror")
    except OSError as e:
        raise FileAccessError(
            f"{component}: cannot read the mirrored file {candidate}: {e.strerror or e}; "
            "fix its permissions, or remove it from the mirror"
        ) from None
    return candidate


def fetch_file(source: ArchiveSource | PypiSource | DebianSource, component: str, opts: FetchOptions) -> tuple[Path, str]:
    """Return (verified file in the cache, where it came from)."""
    cached = opts.cache.download_path(source.sha256, source.filename)
    if _cached_file(cached, source.sha256):
        return cached, "cache"
    # One writer per entry: a second moshi-build waits here, then finds the file cached.
    with file_lock(opts.cache.entry_lock(cached.parent), echo=_echo,
                   waiting=f"{component}: another moshi-build is fetching {source.filename}; "
                           "waiting for it to finish"):
        if _cached_file(cached, source.sha256):
            return cached, "cache"
        return _fetch_file_locked(source, component, cached, opts)


def _fetch_file_locked(source, component: str, cached: Path, opts: FetchOptions) -> tuple[Path, str]:
    bad: list[Exception] = []
    for mirror in opts.mirrors:
        try:
            candidate = _from_mirror(mirror, source, component)
        except (ChecksumMismatchError, ConfigurationError, FileAccessError) as e:
            # a bad or unreadable copy: the next mirror, or the network, may hold a good one
            bad.append(e)
            _echo(f"warning: {e}; trying the next source")
            continue
        if candidate is not None:
            _copy_into_cache(candidate, cached, source.sha256)
            return cached, f"mirror {candidate}"

    if opts.offline and bad:
        raise bad[0]
    if opts.offline:
        raise OfflineError(
            f"{component}: {source.filename} is neither cached nor in a mirror and --offline forbids "
            "the network; add a --mirror holding it or run once online"
        )
    if isinstance(source, PypiSource):
        settings = pypi.pip_settings()
        session = pypi.session_for(settings)
        url, advertised = pypi.find_sdist_url(source.package, source.filename, settings, session)
        if advertised and advertised != source.sha256:
            raise ChecksumMismatchError(
                f"{component}: the index serves {source.filename} with sha256 {advertised}, but the recipe "
                f"pins {source.sha256}; the release was replaced upstream or the index is wrong"
            )
    elif isinstance(source, DebianSource):
        return _fetch_from_debian_archives(source, component, cached, opts)
    else:
        url, session = source.url, None
    with disk_full_as_error(cached.parent):
        download(url, cached, sha256=source.sha256, progress=opts.progress,
                 description=source.filename, session=session, max_size=opts.max_download)
    return cached, url


def _fetch_from_debian_archives(source: DebianSource, component: str, cached: Path,
                                opts: FetchOptions) -> tuple[Path, str]:
    urls = debian_archive.candidate_urls(source.package, source.filename, source.component, opts.apt_roots)
    if not urls:
        raise DownloadError(
            f"{component}: {source.filename} comes from Debian's archive, but no apt sources were found "
            f"under {', '.join(map(str, opts.apt_roots))}; add a --mirror holding the file"
        )
    failures = []
    for url in urls:
        try:
            with disk_full_as_error(cached.parent):
                download(url, cached, sha256=source.sha256, progress=opts.progress,
                         description=source.filename, max_size=opts.max_download)
            return cached, url
        except DownloadError as e:  # not in this archive (another distribution, an old version): next one
            failures.append(f"{url}: {e.message}")
    raise DownloadError(
        f"{component}: {source.filename} (Debian {source.package} {source.version}) is in none of the "
        f"archives apt is configured with ({'; '.join(failures)}); add a --mirror holding the file"
    )


def _git(*args: str, cwd: Path | None = None, capture: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=not capture)


def _has_commit(git_dir: Path, commit: str) -> bool:
    return _git("--git-dir", str(git_dir), "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def _mirror_git_dir(mirror: Path, source: GitSource) -> Path | None:
    for name in (f"{source.repo_name}.git", source.repo_name):
        cand = mirror / name
        if (cand / ".git").is_dir():
            return cand / ".git"
        if (cand / "HEAD").is_file() and (cand / "objects").is_dir():
            return cand
    return None


def fetch_git(source: GitSource, component: str, opts: FetchOptions) -> tuple[Path, str]:
    """Make sure a bare repository in the cache holds the pinned commit."""
    url_hash = hashlib.sha256(source.url.encode()).hexdigest()[:12]
    repo = opts.cache.git / f"{source.repo_name}-{url_hash}.git"
    if repo.exists() and _has_commit(repo, source.commit):
        return repo, "cache"
    with file_lock(opts.cache.entry_lock(repo), echo=_echo,
                   waiting=f"{component}: another moshi-build is fetching {source.repo_name}; waiting for it"):
        return _fetch_git_locked(source, component, repo, opts)


def _fetch_git_locked(source: GitSource, component: str, repo: Path, opts: FetchOptions) -> tuple[Path, str]:
    if not repo.exists():
        with staging_dir(repo) as tmp:
            res = _git("init", "--bare", "-q", str(tmp))
            if res.returncode:
                raise DownloadError(f"git init failed: {res.stderr.strip()}")
    if _has_commit(repo, source.commit):
        return repo, "cache"
    for mirror in opts.mirrors:
        mgit = _mirror_git_dir(Path(mirror), source)
        if mgit and _has_commit(mgit, source.commit):
            res = _git("--git-dir", str(repo), "fetch", "-q", "--", str(mgit), source.commit)
            if res.returncode == 0 and _has_commit(repo, source.commit):
                return repo, f"mirror {mgit}"
    if opts.offline:
        raise OfflineError(
            f"{component}: commit {source.commit} is neither cached nor in a mirror and --offline forbids "
            f"the network; add a --mirror holding {source.repo_name}.git or give --source {component}=DIR"
        )
    # "--": a URL is never read as an option (--upload-pack=... runs a command)
    res = _git("--git-dir", str(repo), "fetch", "-q", "--depth", "1", "--", source.url, source.commit)
    if res.returncode or not _has_commit(repo, source.commit):
        raise DownloadError(
            f"{component}: could not fetch commit {source.commit} from {source.url} "
            f"({res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'git failed'}); "
            f"check the network, or give --source {component}=DIR with a checkout of that commit"
        )
    return repo, source.url


def _walk_error(error: OSError) -> None:
    raise error


def tree_digest(root: Path) -> str:
    """Content hash of a local directory (paths, modes, bytes and link targets; .git ignored).

    A link to a directory counts by its target, like a link to a file (the walk does not
    follow it; the copy keeps it a link). A FIFO, socket or device is refused: it is not
    source, and copying it would block or fail."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dir_links = sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and d not in dir_links)
        for name in sorted(filenames + dir_links):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            mode = os.lstat(p).st_mode
            if not (stat.S_ISLNK(mode) or stat.S_ISREG(mode)):
                raise ConfigurationError(
                    f"source folder {root} holds {rel}, which is {_kind_of(p)}, not a source file; "
                    "remove it (or give a clean copy of the source)"
                )
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
            if stat.S_ISLNK(mode):
                h.update(b"L" + os.readlink(p).encode("utf-8", "surrogateescape"))
            else:
                h.update(b"X" if os.access(p, os.X_OK) else b"F")
                h.update(sha256_file(p).encode())
    return h.hexdigest()


def _copy_tree(src: Path, dest: Path) -> None:
    try:
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
    except shutil.Error as e:  # one entry per file that failed: name the first
        first = e.args[0][0] if e.args and isinstance(e.args[0], list) and e.args[0] else None
        what = f"{first[0]}: {first[2]}" if first else str(e)
        raise FileAccessError(f"cannot copy the source folder {src} ({shorten(what)}); "
                              "check its permissions") from None


def _tree_key(recipe: Recipe, pin: str, subdirectory: str | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([recipe.name, pin, subdirectory, [p.sha256 for p in recipe.patches]]).encode())
    return h.hexdigest()[:16]


def fetch_source(recipe: Recipe, opts: FetchOptions) -> SourceTree:
    """Fetch, verify, extract and patch one component's source (cached by content)."""
    source = recipe.source
    override = opts.overrides.get(recipe.name)
    subdirectory = source.subdirectory
    verified = True

    if isinstance(source, LocalSource) and override is None:
        override = source.path
    if override is not None:
        # A project-local source is ours and hashed; a --source override is the user's, unverified.
        verified = isinstance(source, LocalSource) and override == source.path
        origin = str(override)
        if override.is_dir():
            # A checkout is used as it is: no subdirectory of the pinned archive applies.
            subdirectory = None
            if not any(p.name != ".git" for p in override.iterdir()):
                flag = f"--source {recipe.name}={override}" if not verified else f"the source folder {override}"
                raise ConfigurationError(
                    f"{flag}: the folder is empty; point it at a checkout of {recipe.name}"
                )
            pin = "tree:" + tree_digest(override)

            def populate(dest: Path) -> Path:
                _copy_tree(override, dest / "src")
                return dest / "src"
        else:
            pin = "sha256:" + sha256_file(override)

            def populate(dest: Path) -> Path:
                extract_archive(override, dest / "src")
                return source_root(dest / "src", None)
    elif isinstance(source, GitSource):
        repo, origin = fetch_git(source, recipe.name, opts)
        pin = source.commit

        def populate(dest: Path) -> Path:
            archive = dest / "export.tar"
            res = _git("--git-dir", str(repo), "archive", "--format=tar", "-o", str(archive), source.commit)
            if res.returncode:
                raise DownloadError(f"{recipe.name}: git archive failed: {res.stderr.strip()}")
            extract_archive(archive, dest / "src")
            archive.unlink()
            return source_root(dest / "src", subdirectory) if subdirectory else dest / "src"
    else:
        archive, origin = fetch_file(source, recipe.name, opts)
        pin = source.sha256

        def populate(dest: Path) -> Path:
            extract_archive(archive, dest / "src")
            return source_root(dest / "src", subdirectory)

    key = _tree_key(recipe, pin, subdirectory)
    final = opts.cache.sources / f"{recipe.name}-{key}"
    if override is not None:
        made_from = str(origin)
    elif isinstance(source, GitSource):
        made_from = f"commit {source.commit} of the cached repository"
    else:
        made_from = "the verified archive"

    def make(tmp: Path) -> None:
        (tmp / "src").mkdir()
        root = populate(tmp)
        if not any(root.iterdir()):
            raise ConfigurationError(f"{recipe.name}: the source from {shorten(origin)} holds no files; "
                                     "check the archive or folder it names")
        apply_patches(root, list(recipe.patches), where=f"the source of {recipe.name} from {shorten(origin)}")
        # The build uses a fixed path; record which part of the extraction is the root.
        (tmp / "root").symlink_to(root.relative_to(tmp))

    _ensure_tree(final, make, made_from, recipe.name, opts)
    return SourceTree(
        component=recipe.name,
        version=recipe.version,
        path=(final / "root").resolve(),
        key=key,
        origin=origin,
        pin=pin,
        verified=verified,
        patches=tuple(p.file for p in recipe.patches),
    )


def _tree_state(final: Path, made_from: str) -> str:
    """"ok" (its manifest matches), "missing" or "unrecorded" (made before manifests existed);
    a tree changed since it was made is ChecksumMismatchError (exit 4)."""
    if not os.path.lexists(final):
        return "missing"
    if final.is_symlink() or not final.is_dir():
        raise _tree_changed(final, [f"it is {_kind_of(final)}, not a directory"], made_from)
    recorded = manifest.read(final)
    if recorded is None:
        return "unrecorded"
    found, stale = manifest.differences(final, recorded)
    if found:
        raise _tree_changed(final, found, made_from)
    if stale:
        manifest.refresh(final, recorded)
    return "ok"


def _tree_changed(final: Path, found: list[str], made_from: str) -> ChecksumMismatchError:
    more = f"; and {len(found) - 1} more difference(s)" if len(found) > 1 else ""
    return ChecksumMismatchError(
        f"cached source tree {final} was changed after it was made ({shorten(found[0])}{more}); it is not "
        f"built from: delete it (rm -rf {final}) and run again, and moshi-build makes it again from {made_from}"
    )


def _ensure_tree(final: Path, make, made_from: str, component: str, opts: FetchOptions) -> None:
    """Make the tree `final` with make(staging) unless the cache holds it unchanged."""
    if _tree_state(final, made_from) == "ok":
        return
    with file_lock(opts.cache.entry_lock(final), echo=_echo,
                   waiting=f"{component}: another moshi-build is preparing its source; waiting for it"):
        state = _tree_state(final, made_from)  # made by the other run while this one waited?
        try:
            if state == "missing":
                with disk_full_as_error(opts.cache.sources), staging_dir(final) as tmp:
                    make(tmp)
                    manifest.write(tmp)
            elif state == "unrecorded":
                _adopt_tree(final, make, made_from, opts)
        except DiskFullError:  # named by the cache, not by the staging folder just removed
            raise DiskFullError(
                f"no space left on the device holding {opts.cache.sources} while preparing the source of "
                f"{component}; free some space (or point --cache-dir elsewhere) and run again: finished work is kept"
            ) from None


def _adopt_tree(final: Path, make, made_from: str, opts: FetchOptions) -> None:
    """A tree made before manifests existed: made again beside it and compared, file by file;
    the same, it gets its manifest; different, it is refused like a changed tree."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        with disk_full_as_error(opts.cache.sources):
            make(scratch)
        fresh = manifest.scan(scratch)
        have = manifest.scan(final)
        found, _ = manifest.differences(final, fresh, have, compare_mtimes=False)
        if found:
            raise _tree_changed(final, found, made_from)
        manifest.write(final, have)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fetch_all(recipes: list[Recipe], opts: FetchOptions) -> list[SourceTree]:
    unknown = set(opts.overrides) - {r.name for r in recipes}
    if unknown:
        raise ConfigurationError(
            f"--source names unknown component(s) {shorten(', '.join(sorted(unknown)))}; "
            f"components: {', '.join(r.name for r in recipes)}"
        )
    return [fetch_source(r, opts) for r in recipes]


def write_lock(trees: list[SourceTree], path: Path) -> None:
    """Record what was actually used, atomically (a full disk or a read-only folder is a
    one-line error, and no temporary file is left)."""
    data = {"lock_version": 1, "sources": [t.lock_entry() for t in trees]}
    write_atomic(path, json.dumps(data, indent=2) + "\n", doing="writing the lock of the sources used")
