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


HOST = "host-x86_64-unknown-linux-gnu-"


def elf_with_fatbin(tmp_path, data: bytes):
    """A real shared library (host gcc) whose .hip_fatbin section holds `data`."""
    import shutil
    import subprocess

    import pytest

    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to make a test ELF file")
    src = tmp_path / "fat.c"
    src.write_text('__attribute__((section(".hip_fatbin"), used, aligned(4096))) const unsigned char fatbin[] = {'
                   + ",".join(map(str, data)) + "};\nint f(void) { return fatbin[0]; }\n")
    lib = tmp_path / "libfat.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def test_trim_keeps_one_target_in_place_and_zeroes_the_rest(tmp_path):
    from builder.offload import fatbin_summary, trim_to_target

    data = (bundle({HOST: b"", "hipv4-amdgcn-amd-amdhsa--gfx1100": b"A" * 100,
                    "hipv4-amdgcn-amd-amdhsa--gfx1030": b"B" * 300})
            + b"\0" * 8
            + bundle({HOST: b"", "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-": b"C" * 200,
                      "hipv4-amdgcn-amd-amdhsa--gfx1100": b"D" * 50}))
    lib = elf_with_fatbin(tmp_path, data)
    size = lib.stat().st_size
    result = trim_to_target(lib, "gfx1100")
    assert (result.bundles, result.entries_dropped) == (2, 2)
    assert lib.stat().st_size == size
    summary = fatbin_summary(lib)
    assert summary.targets == {"gfx1100": 150} and summary.bundles == 2
    raw = lib.read_bytes()
    assert b"B" * 300 not in raw and b"C" * 200 not in raw and b"gfx1030" not in raw and b"gfx90a" not in raw
    assert b"A" * 100 in raw and b"D" * 50 in raw
    # Entries keep their offsets: the kept code is where the header says.
    second = raw.find(MAGIC, raw.find(MAGIC) + 1)
    count, = struct.unpack_from("<Q", raw, second + 24)
    offsets = []
    pos = second + 32
    for _ in range(count):
        off, sz, n = struct.unpack_from("<QQQ", raw, pos)
        offsets.append((raw[pos + 24:pos + 24 + n], off, sz))
        pos += 24 + n
    (ident, off, sz), = [e for e in offsets if e[0].endswith(b"gfx1100")]
    assert raw[second + off:second + off + sz] == b"D" * 50


def test_trim_refuses_a_library_without_the_target(tmp_path):
    import pytest

    from builder.offload import trim_to_target

    lib = elf_with_fatbin(tmp_path, bundle({HOST: b"", "hipv4-amdgcn-amd-amdhsa--gfx1030": b"B" * 30}))
    before = lib.read_bytes()
    with pytest.raises(ValueError, match="no device code for gfx1100"):
        trim_to_target(lib, "gfx1100")
    assert lib.read_bytes() == before
