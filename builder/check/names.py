"""Distribution names and versions as the checks compare them (the wheel file's name, the
records inside it, a requirement's pin)."""

from __future__ import annotations

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version


def folder_of(distribution: str) -> str:
    """The normalized distribution name: the import folder and the wheel file's name prefix."""
    return canonicalize_name(distribution).replace("-", "_")


def _version(text) -> Version | str:
    try:
        return Version(str(text))
    except InvalidVersion:
        return str(text)


def same_version(a, b) -> bool:
    """a and b name one version (1.0 == 1.0.0); an unparsable one only equals its own spelling."""
    return a is not None and b is not None and _version(a) == _version(b)
