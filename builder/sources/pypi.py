"""Find an sdist's download URL through pip's own configuration.

Index URLs, extra index URLs, certificates and proxies come from `pip config
list` (files and PIP_* environment variables, resolved by pip itself), so a
private index, a proxy or a mirror configured for pip works here unchanged.
The default index is pip's own default, not a host written here.
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path
from urllib.parse import urldefrag, urlparse
from urllib.request import url2pathname

import requests
from packaging.utils import canonicalize_name
from pypi_simple import NoSuchProjectError, PyPISimple, ProjectPage

from builder.errors import DownloadError


@dataclasses.dataclass(frozen=True)
class PipSettings:
    index_urls: tuple[str, ...]
    cert: str | None = None
    proxy: str | None = None
    timeout: float | None = None


def _pip_default_index() -> str:
    from pip._internal.models.index import PyPI  # pip's own notion of the default index

    return PyPI.simple_url


def pip_settings() -> PipSettings:
    """Read pip's effective configuration (env vars win over the download section over global)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise DownloadError(f"could not read pip's configuration ({e}); is pip installed for {sys.executable}?") from None
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        try:
            values[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = raw.strip().strip("'\"")

    def lookup(name: str) -> str | None:
        for section in (":env:", "download", "global"):
            if f"{section}.{name}" in values:
                return values[f"{section}.{name}"]
        return None

    index = lookup("index-url") or _pip_default_index()
    extra = (lookup("extra-index-url") or "").split()
    timeout = lookup("timeout") or lookup("default-timeout")
    return PipSettings(
        index_urls=(index, *extra),
        cert=lookup("cert"),
        proxy=lookup("proxy"),
        timeout=float(timeout) if timeout else None,
    )


def session_for(settings: PipSettings) -> requests.Session:
    session = requests.Session()
    if settings.cert:
        session.verify = settings.cert
    if settings.proxy:
        session.proxies = {"http": settings.proxy, "https": settings.proxy}
    return session


def _project_page(index_url: str, package: str, session: requests.Session) -> ProjectPage | None:
    if index_url.startswith("file:"):
        # A local PEP 503 tree: <root>/<project>/index.html
        root = Path(url2pathname(urlparse(index_url).path))
        page = root / canonicalize_name(package) / "index.html"
        if not page.is_file():
            return None
        return ProjectPage.from_html(package, page.read_text(), base_url=page.as_uri())
    with PyPISimple(endpoint=index_url, session=session) as client:
        try:
            return client.get_project_page(package, timeout=30)
        except NoSuchProjectError:
            return None


def find_sdist_url(package: str, filename: str, settings: PipSettings, session: requests.Session) -> tuple[str, str | None]:
    """Return (url, sha256 the index advertises or None) of `filename` on the first index that has it."""
    problems: list[str] = []
    for index_url in settings.index_urls:
        try:
            page = _project_page(index_url, package, session)
        except (requests.RequestException, OSError, ValueError) as e:
            problems.append(f"{_safe(index_url)}: {type(e).__name__}")
            continue
        if page is None:
            continue
        for pkg in page.packages:
            if pkg.filename == filename:
                url, _ = urldefrag(pkg.url)
                return url, pkg.digests.get("sha256")
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise DownloadError(
        f"{filename} of {package} was not found on any of pip's indexes{detail}; "
        "check pip's index configuration, or put the file in a --mirror directory"
    )


def _safe(url: str) -> str:
    """An index URL without credentials, for messages."""
    p = urlparse(url)
    return p._replace(netloc=p.hostname or "").geturl() if p.password else url
