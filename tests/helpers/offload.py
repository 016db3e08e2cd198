"""Clang offload bundles in the real format ("__CLANG_OFFLOAD_BUNDLE__"), written byte by byte."""

from __future__ import annotations

import struct

from builder.rocm.offload import MAGIC


def bundle(entries: dict[str, bytes]) -> bytes:
    """An uncompressed offload bundle: entry id (e.g. hipv4-amdgcn-amd-amdhsa--gfx1100) -> code."""
    header = MAGIC + struct.pack("<Q", len(entries))
    table_len = sum(24 + len(i) for i in entries)
    offset = len(header) + table_len
    table, payload = b"", b""
    for ident, code in entries.items():
        table += struct.pack("<QQQ", offset + len(payload), len(code), len(ident)) + ident.encode()
        payload += code
    return header + table + payload
