"""Ask a wheel's own libamd_comgr which code object the HIP runtime would load, without a GPU.

Runs as a script with any python3 (standard library only), on a machine whose
glibc can load the wheel's libraries (the clean root, or the host when it is
new enough):

    python3 comgr_probe.py MANIFEST.json RESULT.json

MANIFEST: {"comgr": path of libamd_comgr.so.N, "bundles": [{"path": file holding one
bundle, "compressed": bool, "isas": ["gfx1100", "gfx1101"]}, ...]}

For each bundle and each ISA it asks exactly what ROCm's clr asks in
hipamd/src/hip_fatbin.cpp:
  plain bundle       amd_comgr_lookup_code_object on data of kind FATBIN with the
                     ISA name amdgcn-amd-amdhsa--<isa>; a match has a size > 0
  compressed bundle  the AMD_COMGR_ACTION_UNBUNDLE action on data of kind
                     OBJ_BUNDLE with the bundle entry id hipv4-amdgcn-amd-amdhsa--<isa>;
                     the EXECUTABLE results
and records the size and ELF e_flags of what it found (size 0: nothing).
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys

# amd_comgr.h (comgr 3.x, ROCm 7.2.4)
DATA_KIND_EXECUTABLE = 0x8
DATA_KIND_FATBIN = 0x10
DATA_KIND_OBJ_BUNDLE = 0x14
ACTION_UNBUNDLE = 0xF
STATUS_SUCCESS = 0


class Handle(ctypes.Structure):
    _fields_ = [("handle", ctypes.c_uint64)]


class CodeObjectInfo(ctypes.Structure):
    _fields_ = [("isa", ctypes.c_char_p), ("size", ctypes.c_size_t), ("offset", ctypes.c_uint64)]


class ComgrError(RuntimeError):
    pass


class Comgr:
    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        # The data kinds and action numbers above are comgr 3's (2.x numbered UNBUNDLE 0x12).
        major, minor = ctypes.c_size_t(), ctypes.c_size_t()
        self.lib.amd_comgr_get_version(ctypes.byref(major), ctypes.byref(minor))
        if major.value != 3:
            raise ComgrError(f"{path} is comgr {major.value}.{minor.value}; this probe speaks comgr 3")
        for name in ("amd_comgr_get_version", "amd_comgr_create_data", "amd_comgr_set_data", "amd_comgr_set_data_name",
                     "amd_comgr_release_data", "amd_comgr_lookup_code_object", "amd_comgr_create_data_set",
                     "amd_comgr_destroy_data_set", "amd_comgr_data_set_add", "amd_comgr_create_action_info",
                     "amd_comgr_destroy_action_info", "amd_comgr_action_info_set_bundle_entry_ids",
                     "amd_comgr_do_action", "amd_comgr_action_data_count", "amd_comgr_action_data_get_data",
                     "amd_comgr_get_data"):
            getattr(self.lib, name).restype = ctypes.c_int

    def _check(self, status: int, what: str) -> None:
        if status != STATUS_SUCCESS:
            raise ComgrError(f"{what}: comgr status {status}")

    def _data(self, kind: int, blob: bytes, name: bytes) -> Handle:
        data = Handle()
        self._check(self.lib.amd_comgr_create_data(ctypes.c_int(kind), ctypes.byref(data)), "create_data")
        try:
            self._check(self.lib.amd_comgr_set_data(data, ctypes.c_size_t(len(blob)), blob), "set_data")
            self._check(self.lib.amd_comgr_set_data_name(data, name), "set_data_name")
        except ComgrError:
            self.lib.amd_comgr_release_data(data)
            raise
        return data

    def lookup(self, bundle: bytes, isa: str) -> bytes:
        """Plain bundle: the code object comgr picks for `isa` (b"" if none)."""
        data = self._data(DATA_KIND_FATBIN, bundle, b"probe.fatbin")
        try:
            query = (CodeObjectInfo * 1)()
            query[0].isa = f"amdgcn-amd-amdhsa--{isa}".encode()
            self._check(self.lib.amd_comgr_lookup_code_object(data, query, ctypes.c_size_t(1)),
                        "lookup_code_object")
            size, offset = query[0].size, query[0].offset
            return bundle[offset:offset + size] if size else b""
        finally:
            self.lib.amd_comgr_release_data(data)

    def unbundle(self, bundle: bytes, isa: str) -> bytes:
        """Compressed (or plain) bundle: the executable comgr's UNBUNDLE action gives for `isa`."""
        data = self._data(DATA_KIND_OBJ_BUNDLE, bundle, b"probe.bundle")
        inputs, outputs, action = Handle(), Handle(), Handle()
        try:
            self._check(self.lib.amd_comgr_create_data_set(ctypes.byref(inputs)), "create_data_set")
            self._check(self.lib.amd_comgr_create_data_set(ctypes.byref(outputs)), "create_data_set")
            self._check(self.lib.amd_comgr_create_action_info(ctypes.byref(action)), "create_action_info")
            self._check(self.lib.amd_comgr_data_set_add(inputs, data), "data_set_add")
            ids = (ctypes.c_char_p * 1)(f"hipv4-amdgcn-amd-amdhsa--{isa}".encode())
            self._check(self.lib.amd_comgr_action_info_set_bundle_entry_ids(action, ids, ctypes.c_size_t(1)),
                        "set_bundle_entry_ids")
            self._check(self.lib.amd_comgr_do_action(ctypes.c_int(ACTION_UNBUNDLE), action, inputs, outputs),
                        "do_action(UNBUNDLE)")
            count = ctypes.c_size_t()
            self._check(self.lib.amd_comgr_action_data_count(outputs, ctypes.c_int(DATA_KIND_EXECUTABLE),
                                                             ctypes.byref(count)), "action_data_count")
            for i in range(count.value):
                out = Handle()
                self._check(self.lib.amd_comgr_action_data_get_data(
                    outputs, ctypes.c_int(DATA_KIND_EXECUTABLE), ctypes.c_size_t(i), ctypes.byref(out)),
                    "action_data_get_data")
                try:
                    size = ctypes.c_size_t()
                    self._check(self.lib.amd_comgr_get_data(out, ctypes.byref(size), None), "get_data")
                    buf = ctypes.create_string_buffer(size.value)
                    self._check(self.lib.amd_comgr_get_data(out, ctypes.byref(size), buf), "get_data")
                    if size.value:
                        return buf.raw[:size.value]
                finally:
                    self.lib.amd_comgr_release_data(out)
            return b""
        finally:
            if action.handle:
                self.lib.amd_comgr_destroy_action_info(action)
            for handle in (inputs, outputs):
                if handle.handle:
                    self.lib.amd_comgr_destroy_data_set(handle)
            self.lib.amd_comgr_release_data(data)


def elf_flags(blob: bytes) -> int | None:
    """e_flags of a 64-bit ELF file (its low byte is EF_AMDGPU_MACH), None if not ELF."""
    if len(blob) < 52 or blob[:4] != b"\x7fELF" or blob[4] != 2:
        return None
    return struct.unpack_from("<I", blob, 48)[0]


def probe(manifest: dict) -> dict:
    comgr = Comgr(manifest["comgr"])
    results = []
    for entry in manifest["bundles"]:
        with open(entry["path"], "rb") as f:
            blob = f.read()
        answers = {}
        for isa in entry["isas"]:
            try:
                found = comgr.unbundle(blob, isa) if entry["compressed"] else comgr.lookup(blob, isa)
                answers[isa] = {"size": len(found), "e_flags": elf_flags(found)}
            except ComgrError as e:
                answers[isa] = {"size": 0, "e_flags": None, "error": str(e)}
        results.append({"path": entry["path"], "answers": answers})
    return {"results": results}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: comgr_probe.py MANIFEST.json RESULT.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        manifest = json.load(f)
    try:
        result = probe(manifest)
    except (OSError, ComgrError) as e:   # comgr missing, not loadable here, or not comgr 3
        print(f"comgr probe: {e}", file=sys.stderr)
        return 1
    with open(argv[2], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
