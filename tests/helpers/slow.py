"""The slow tier's inputs: the machine's shared cache and mirror, and the test application."""

from __future__ import annotations

from pathlib import Path

from builder.common.cache import Cache, default_cache_root
from builder.sources import fetch as sources

REPO = Path(__file__).resolve().parents[2]
SHARED_MIRROR = REPO.parent / "shared" / "mirror"
# Slow tests reuse the machine's real cache (root filesystem, sources, builds) when
# it is there and fill it when not. Read when this module is first imported (by
# tests/conftest.py, at collection), before any test changes the environment.
SHARED_CACHE = default_cache_root()

# The application the slow tier builds in place of moshi.cpp (which CI cannot download).
TESTAPP = REPO / "tests" / "fixtures" / "testapp" / "testapp.toml"


def fetch_options() -> sources.FetchOptions:
    """Fetch through the shared cache, and the shared mirror when the machine has one."""
    mirrors = (SHARED_MIRROR,) if SHARED_MIRROR.is_dir() else ()
    return sources.FetchOptions(cache=Cache(SHARED_CACHE), mirrors=mirrors, progress=False)
