"""Get each component's source: verified bytes in, patched tree out.

Lookup order for a pinned archive or sdist: the content-addressed cache, then
each --mirror directory (by file name), then the network (unless --offline).
Every candidate is hashed before use; nothing enters the cache unverified.
A `--source NAME=PATH` override replaces the pinned source with a local
directory or archive and is recorded as unverified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder.common.cache import Cache, disk_full_as_error, staging_dir
from builder.common.files import sha256_file
from builder.sources.download import download
from builder.errors import ChecksumMismatchError, ConfigurationError, DownloadError, OfflineError
from builder.sources.extract import extract_archive, source_root
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


def parse_overrides(values: list[str]) -> dict[str, Path]:
    overrides: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigurationError(f"--source {value!r}: expected NAME=PATH, e.g. --source moshi.cpp=~/src/moshi.cpp")
        p = Path(path).expanduser().resolve()
        if not p.exists():
            raise ConfigurationError(f"--source {name}={path}: {p} does not exist")
        overrides[name] = p
    return overrides


def mirrors_from_env() -> tuple[Path, ...]:
    value = os.environ.get(MIRROR_ENV, "")
    return tuple(Path(p).expanduser() for p in value.split(os.pathsep) if p)


def _checksum_error(what: str, path: Path, expected: str, actual: str, advice: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"{what} {path} has sha256 {actual}, but the recipe pins {expected}; {advice}"
    )


def _verified_file(path: Path, expected: str, what: str, advice: str) -> Path:
    actual = sha256_file(path)
    if actual != expected:
        raise _checksum_error(what, path, expected, actual, advice)
    return path


def _copy_into_cache(src: Path, dest: Path) -> None:
    """Copy a verified mirror file into the cache atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        with disk_full_as_error(dest.parent):
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_file(source: ArchiveSource | PypiSource | DebianSource, component: str, opts: FetchOptions) -> tuple[Path, str]:
    """Return (verified file in the cache, where it came from)."""
    cached = opts.cache.download_path(source.sha256, source.filename)
    if cached.exists():
        _verified_file(
            cached, source.sha256, "cached file",
            f"the cache is corrupted: delete it (rm {cached}) and fetch again",
        )
        return cached, "cache"

    for mirror in opts.mirrors:
        candidate = Path(mirror) / source.filename
        if candidate.is_file():
            _verified_file(
                candidate, source.sha256, "mirrored file",
                "replace it with the upstream file, or remove it from the mirror",
            )
            _copy_into_cache(candidate, cached)
            # Verify the copy too: what is in the cache is what gets used.
            _verified_file(cached, source.sha256, "cached file", f"delete {cached} and fetch again")
            return cached, f"mirror {candidate}"

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
                 description=source.filename, session=session)
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
                         description=source.filename)
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
            res = _git("--git-dir", str(repo), "fetch", "-q", str(mgit), source.commit)
            if res.returncode == 0 and _has_commit(repo, source.commit):
                return repo, f"mirror {mgit}"
    if opts.offline:
        raise OfflineError(
            f"{component}: commit {source.commit} is neither cached nor in a mirror and --offline forbids "
            f"the network; add a --mirror holding {source.repo_name}.git or give --source {component}=DIR"
        )
    res = _git("--git-dir", str(repo), "fetch", "-q", "--depth", "1", source.url, source.commit)
    if res.returncode or not _has_commit(repo, source.commit):
        raise DownloadError(
            f"{component}: could not fetch commit {source.commit} from {source.url} "
            f"({res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'git failed'}); "
            f"check the network, or give --source {component}=DIR with a checkout of that commit"
        )
    return repo, source.url


def tree_digest(root: Path) -> str:
    """Content hash of a local directory (paths, modes and bytes; .git ignored)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            h.update(rel.encode() + b"\0")
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode())
            elif p.is_file():
                h.update(b"X" if os.access(p, os.X_OK) else b"F")
                h.update(sha256_file(p).encode())
    return h.hexdigest()


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
            pin = "tree:" + tree_digest(override)

            def populate(dest: Path) -> Path:
                shutil.copytree(override, dest / "src", symlinks=True, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(".git"))
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
    if not final.exists():
        with disk_full_as_error(opts.cache.sources), staging_dir(final) as tmp:
            (tmp / "src").mkdir()
            root = populate(tmp)
            apply_patches(root, list(recipe.patches))
            # The build uses a fixed path; record which part of the extraction is the root.
            (tmp / "root").symlink_to(root.relative_to(tmp))
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


def fetch_all(recipes: list[Recipe], opts: FetchOptions) -> list[SourceTree]:
    unknown = set(opts.overrides) - {r.name for r in recipes}
    if unknown:
        raise ConfigurationError(
            f"--source names unknown component(s) {', '.join(sorted(unknown))}; "
            f"components: {', '.join(r.name for r in recipes)}"
        )
    return [fetch_source(r, opts) for r in recipes]


def write_lock(trees: list[SourceTree], path: Path) -> None:
    """Record what was actually used, atomically."""
    data = {"lock_version": 1, "sources": [t.lock_entry() for t in trees]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
