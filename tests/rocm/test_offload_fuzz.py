"""Property tests: the offload bundle parser reads untrusted bytes (any ELF's .hip_fatbin, any
.co file); random, truncated or damaged input gives BundleFormatError and nothing else."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, example, given, settings, strategies as st

from builder.rocm.offload import (COMPRESSED_MAGIC, MAGIC, METHOD_ZLIB, METHOD_ZSTD, BundleFormatError,
                                  compress_bundle, parse_bundles, trim_bundle_file)
from tests.helpers.offload import bundle

FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

IDS = ["host-x86_64-unknown-linux-gnu-", "hipv4-amdgcn-amd-amdhsa--gfx1100", "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-",
       "hipv4-amdgcn-amd-amdhsa--gfx11-generic"]


def parses_or_refuses(data: bytes) -> None:
    try:
        summary = parse_bundles(data)
    except BundleFormatError:
        return
    assert summary.bundles >= 0
    for entry in summary.entries:
        assert entry.size >= 0


valid_plain = st.dictionaries(st.sampled_from(IDS), st.binary(max_size=64), min_size=1, max_size=4).map(bundle)


@st.composite
def valid_compressed(draw):
    plain = draw(valid_plain)
    return compress_bundle(plain, draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([METHOD_ZLIB, METHOD_ZSTD])))


any_bundle = st.one_of(valid_plain, valid_compressed())


@FUZZ
@given(st.binary(max_size=512))
@example(MAGIC)
@example(COMPRESSED_MAGIC)
@example(MAGIC + struct.pack("<Q", 2**64 - 1))
@example(COMPRESSED_MAGIC + struct.pack("<HHQQQ", 3, METHOD_ZSTD, 2**63, 2**63, 0))
@example(COMPRESSED_MAGIC + struct.pack("<HHIQ", 1, METHOD_ZLIB, 2**32 - 1, 0))
def test_random_bytes(data):
    parses_or_refuses(data)


@FUZZ
@given(st.binary(max_size=64), st.binary(max_size=256))
def test_random_bytes_after_a_magic(prefix, rest):
    parses_or_refuses(prefix + MAGIC + rest)
    parses_or_refuses(prefix + COMPRESSED_MAGIC + rest)


@FUZZ
@given(any_bundle, st.data())
def test_truncated_bundles(data, draw):
    cut = draw.draw(st.integers(0, len(data)))
    parses_or_refuses(data[:cut])


@FUZZ
@given(any_bundle, st.data())
def test_damaged_bundles(data, draw):
    damaged = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        i = draw.draw(st.integers(0, len(damaged) - 1))
        damaged[i] = draw.draw(st.integers(0, 255))
    parses_or_refuses(bytes(damaged))


@FUZZ
@given(st.lists(any_bundle, min_size=1, max_size=3), st.integers(0, 16))
def test_valid_bundles_one_after_another_parse(bundles, padding):
    # Between bundles a fat binary holds alignment zeros (random bytes could spell a bundle's magic:
    # a bundle the parser must then read, not padding).
    data = bytes(padding).join(bundles)
    summary = parse_bundles(data)
    assert summary.bundles >= len(bundles)


@FUZZ
@given(st.one_of(any_bundle, st.binary(max_size=256)), st.data())
def test_a_code_object_file_is_trimmed_or_refused(tmp_path_factory, data, draw):
    cut = draw.draw(st.integers(0, len(data)))
    path = tmp_path_factory.mktemp("co") / "kernels.co"
    path.write_bytes(data[:cut])
    try:
        trim_bundle_file(path, "gfx1100")
    except BundleFormatError:
        pass
    except ValueError as e:  # a readable bundle without the target: its own message
        assert "carries no device code for gfx1100" in str(e)


def test_a_header_claiming_a_terabyte_is_refused_before_memory_is_set_aside():
    size = 2**40
    # a zstd frame that declares 1 TiB of content and holds one empty block
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", size) + bytes([0x01, 0x00, 0x00])
    for claimed in (size, 12345):
        header = COMPRESSED_MAGIC + struct.pack("<HHQQQ", 3, METHOD_ZSTD, 32 + len(frame), claimed, 0)
        try:
            parse_bundles(header + frame)
        except BundleFormatError as e:
            assert "bytes" in str(e)
        else:
            raise AssertionError("a bomb header was accepted")
