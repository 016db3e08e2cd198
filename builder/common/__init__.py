"""Shared by every stage: the cache layout, the logged subprocess runner, sha256 and file locks, the resource loader."""
