"""The one parser of AMD GPU target names.

  processor    gfx<major><minor><stepping>: one or two decimal digits of major version,
               then one hex digit each of minor version and stepping: gfx906, gfx90a,
               gfx1100, gfx1151 (LLVM's AMDGPU processor names).
  generic ISA  gfx<major>[-<minor>]-generic: gfx9-generic, gfx10-3-generic, gfx11-generic;
               code objects for a generic ISA run on every processor it covers.

A name may carry target features (gfx90a:xnack-, gfx90a-xnack+ in file names); they are
not part of it. The JSON schemas spell the processor pattern out (SCHEMA_PATTERN; a test
keeps them equal).
"""

from __future__ import annotations

import re

# A processor name, without anchors (for building other patterns from it).
PROCESSOR = r"gfx[0-9]{1,2}[0-9a-f]{2}"
# A generic ISA, without anchors.
GENERIC = r"gfx[0-9]{1,2}(?:-[0-9]+)*-generic"
# "pattern" of a gfx name in the JSON schemas (targets, stacks).
SCHEMA_PATTERN = f"^{PROCESSOR}$"
# Where a name found in a longer text ends: not in the middle of a word or a number.
_END = r"(?![0-9a-z])"

_VERSION = re.compile(r"gfx(?P<major>[0-9]{1,2})(?P<minor>[0-9a-f])(?P<stepping>[0-9a-f])")
_PROCESSOR = re.compile(PROCESSOR)
_GENERIC = re.compile(GENERIC)
# In a text: generic ISAs first (gfx11-generic is not gfx11 followed by a feature).
_IN_TEXT = re.compile(f"(?:{GENERIC}|{PROCESSOR}){_END}")


def is_gfx_name(text: str) -> bool:
    """True for a processor name: gfx1100, gfx90a (not gfx11-generic, not gfx90a:xnack-)."""
    return isinstance(text, str) and _PROCESSOR.fullmatch(text) is not None


def is_generic_isa(text: str) -> bool:
    """True for a generic ISA name: gfx11-generic, gfx10-3-generic."""
    return isinstance(text, str) and _GENERIC.fullmatch(text) is not None


def gfx_version(name: str) -> tuple[int, int, int] | None:
    """(major, minor, stepping) of a processor name: gfx90a -> (9, 0, 10); None for anything else."""
    m = _VERSION.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        return None
    return int(m["major"]), int(m["minor"], 16), int(m["stepping"], 16)


def gfx_names_in(text: str) -> list[str]:
    """gfx names (processors and generic ISAs) that `text` mentions, in order, features
    left off: 'TensileLibrary_lazy_gfx90a-xnack+.dat' -> ['gfx90a'],
    'hipv4-amdgcn-amd-amdhsa--gfx11-generic' -> ['gfx11-generic']."""
    return _IN_TEXT.findall(text)


def processors_in(text: str) -> list[str]:
    """The processor names among gfx_names_in(text) (generic ISAs left out)."""
    return [n for n in gfx_names_in(text) if is_gfx_name(n)]
