"""Dynamic-section facts of an ELF file (kind, SONAME, DT_NEEDED, RUNPATH)."""

from __future__ import annotations
import dataclasses
import logging
from pathlib import Path
from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile


log = logging.getLogger(__name__)


ELF_MAGIC = b"\x7fELF"


@dataclasses.dataclass(frozen=True)
class ElfInfo:
    path: Path
    kind: str                      # "executable" (has an interpreter), "library" or "other"
    soname: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]       # DT_RUNPATH, else DT_RPATH
    debug: bool = False            # has .debug_* / .zdebug_* sections


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo | None:
    """Dynamic-section facts of an ELF file; None for anything else."""
    if not path.is_file() or not is_elf(path):
        return None
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            interp = any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
            soname, needed, rpath, runpath = None, [], (), ()
            for seg in elf.iter_segments():
                if isinstance(seg, DynamicSegment):
                    for tag in seg.iter_tags():
                        t = tag.entry.d_tag
                        if t == "DT_SONAME":
                            soname = tag.soname
                        elif t == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif t == "DT_RPATH":
                            rpath = tuple(x for x in tag.rpath.split(":") if x)
                        elif t == "DT_RUNPATH":
                            runpath = tuple(x for x in tag.runpath.split(":") if x)
                    break
            e_type = elf["e_type"]
            debug = any(sec.name.startswith((".debug_", ".zdebug_")) for sec in elf.iter_sections())
    except (ELFError, OSError, ValueError) as e:
        log.debug("not a readable ELF file: %s (%s)", path, e)
        return None
    if interp:
        kind = "executable"
    elif e_type == "ET_DYN":
        kind = "library"
    else:
        kind = "other"
    return ElfInfo(path, kind, soname, tuple(needed), runpath or rpath, debug)
