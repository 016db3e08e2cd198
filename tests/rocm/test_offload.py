import struct

from builder.rocm.offload import MAGIC, parse_bundles
from tests.helpers.offload import bundle


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


def compressed(entries: dict[str, bytes], version: int = 3, method: int = 1) -> bytes:
    """A compressed bundle ("CCOB") as clang --offload-compress writes it."""
    from builder.rocm.offload import compress_bundle

    return compress_bundle(bundle(entries), version, method)


def test_compressed_bundles_are_read_by_their_header():
    import hashlib

    from builder.rocm.offload import iter_bundles

    plain = bundle({"host-x86_64-unknown-linux-gnu-": b"", "hipv4-amdgcn-amd-amdhsa--gfx1201": b"R" * 500,
                    "hipv4-amdgcn-amd-amdhsa--gfx942": b"M" * 700})
    for version, method in ((3, 1), (2, 1), (2, 0)):
        packed = compressed({"host-x86_64-unknown-linux-gnu-": b"", "hipv4-amdgcn-amd-amdhsa--gfx1201": b"R" * 500,
                             "hipv4-amdgcn-amd-amdhsa--gfx942": b"M" * 700}, version, method)
        magic, v, m = struct.unpack_from("<4sHH", packed)
        assert (magic, v, m) == (b"CCOB", version, method)
        # hash field: the MD5's low 64 bits of the plain bundle (as in rocBLAS 7.2.4's bundles)
        digest = struct.unpack_from("<Q", packed, 24 if version == 3 else 16)[0]
        assert digest == int.from_bytes(hashlib.md5(plain).digest()[:8], "little")
        # followed by padding and a plain bundle: the reader goes by the header's total size
        data = packed + b"\0" * 13 + bundle({"hipv4-amdgcn-amd-amdhsa--gfx1100": b"P" * 10})
        s = parse_bundles(data)
        assert (s.bundles, s.compressed_bundles) == (2, 1)
        assert s.targets == {"gfx1201": 500, "gfx942": 700, "gfx1100": 10}
        first = next(iter_bundles(data))
        assert first.extent == len(packed) and first.code_object("gfx942") == b"M" * 700


def test_a_truncated_compressed_bundle_is_an_error_not_a_guess():
    import pytest

    from builder.rocm.offload import BundleFormatError

    packed = compressed({"hipv4-amdgcn-amd-amdhsa--gfx1201": b"R" * 500})
    with pytest.raises(BundleFormatError, match="runs past the data"):
        parse_bundles(packed[:-5])
    with pytest.raises(BundleFormatError, match="unknown format version 9"):
        parse_bundles(b"CCOB\x09\x00\x01\x00" + b"\0" * 40)


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
    from builder.rocm.offload import fatbin_summary, trim_to_target

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

    from builder.rocm.offload import trim_to_target

    lib = elf_with_fatbin(tmp_path, bundle({HOST: b"", "hipv4-amdgcn-amd-amdhsa--gfx1030": b"B" * 30}))
    before = lib.read_bytes()
    with pytest.raises(ValueError, match="no device code for gfx1100"):
        trim_to_target(lib, "gfx1100")
    assert lib.read_bytes() == before


def test_trim_recompresses_compressed_bundles_in_place(tmp_path):
    from builder.rocm.offload import fatbin_summary, iter_bundles, trim_to_target

    code = {t: bytes([i + 65]) * (4000 + 100 * i) for i, t in enumerate(["gfx1100", "gfx1201", "gfx942", "gfx1151"])}
    entries = {HOST: b"", **{f"hipv4-amdgcn-amd-amdhsa--{t}": c for t, c in code.items()}}
    first, second = compressed(entries, 3), compressed(entries, 2)
    data = first + b"\0" * 8 + second + bundle({HOST: b"", "hipv4-amdgcn-amd-amdhsa--gfx1201": b"Z" * 64,
                                                 "hipv4-amdgcn-amd-amdhsa--gfx1030": b"Y" * 64})
    lib = elf_with_fatbin(tmp_path, data)
    size = lib.stat().st_size
    result = trim_to_target(lib, "gfx1201")
    assert (result.bundles, result.compressed_bundles, result.entries_dropped) == (3, 2, 7)
    assert result.bytes_saved > 0 and lib.stat().st_size == size
    summary = fatbin_summary(lib)
    assert summary.targets == {"gfx1201": 2 * len(code["gfx1201"]) + 64}
    assert (summary.bundles, summary.compressed_bundles) == (3, 2)
    from builder.rocm.offload import fatbin_section
    bundles = list(iter_bundles(fatbin_section(lib)))
    # each bundle starts where it did (the host code points there), and keeps its format version
    assert [b.start for b in bundles] == [0, len(first) + 8, len(first) + 8 + len(second)]
    assert [b.version for b in bundles[:2]] == [3, 2]
    assert all(b.code_object("gfx1201") == code["gfx1201"] for b in bundles[:2])
    assert all(b.code_object(t) is None for b in bundles for t in ("gfx1100", "gfx942", "gfx1151", "gfx1030"))
