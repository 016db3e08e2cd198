import struct

from builder.offload import MAGIC, parse_bundles


def bundle(entries: dict[str, bytes]) -> bytes:
    header = MAGIC + struct.pack("<Q", len(entries))
    table_len = sum(24 + len(i) for i in entries)
    offset = len(header) + table_len
    table, payload = b"", b""
    for ident, code in entries.items():
        table += struct.pack("<QQQ", offset + len(payload), len(code), len(ident)) + ident.encode()
        payload += code
    return header + table + payload


def test_targets_and_sizes_from_two_bundles():
    data = (
        bundle({"host-x86_64-unknown-linux-gnu-": b"", "hipv4-amdgcn-amd-amdhsa--gfx1100": b"A" * 100})
        + b"\0" * 16
        + bundle({"host-x86_64-unknown-linux-gnu-": b"",
                  "hipv4-amdgcn-amd-amdhsa--gfx1100": b"B" * 50,
                  "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-": b"C" * 30})
    )
    s = parse_bundles(data)
    assert s.bundles == 2 and s.compressed_bundles == 0
    assert s.targets == {"gfx1100": 150, "gfx90a": 30}


def test_device_code_that_looks_like_a_magic_is_skipped():
    # The payload itself contains the magic: parsing must jump past it.
    data = bundle({"hipv4-amdgcn-amd-amdhsa--gfx1030": MAGIC + b"x" * 40})
    assert parse_bundles(data).targets == {"gfx1030": 64}


def test_compressed_bundles_are_counted():
    s = parse_bundles(b"CCOB\x02\x00" + b"\0" * 40)
    assert s.compressed_bundles == 1 and s.targets == {}
