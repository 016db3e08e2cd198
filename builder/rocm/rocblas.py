"""Everything the builder knows about rocBLAS (the facts are in resources/rocblas.toml).

  soname()                 fnmatch pattern of the fat binary's SONAME (librocblas.so.*)
  find_kernel_folder()     the Tensile kernel folder of an installation (the probes)
  kernel_folder_rule()     the same folder as the wheel's data folder (runtime rules)
  kernel_targets_in()      gfx targets a kernel folder has kernels for
  select_target_files()    the files of a kernel folder one target's wheel keeps
  is_code_object_file(), is_bundle_file()
                           which of its files hold device code, and which are offload bundles
  header_version()         rocBLAS's own version, from rocblas-version.h
  label(), label_of(), stack_label(), debian_label()
                           how messages name a rocBLAS

Tensile names its files after the gfx target they hold code for
(TensileLibrary_lazy_gfx1100.dat, Kernels.so-000-gfx1100.hsaco,
TensileLibrary_Type_HH_..._gfx90a-xnack-.co); a file that names no target is
arch-independent (TensileLibrary_Type_..._fallback.dat) and read for every target.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.version import InvalidVersion, Version

from builder.common import resources
from builder.rocm import gfx


@dataclasses.dataclass(frozen=True)
class Facts:
    """resources/rocblas.toml."""

    name: str
    soname: str
    debian_package_prefix: str
    debian_dev_package: str
    version_header: str
    version_defines: tuple[str, ...]
    search_in_prefix: tuple[str, ...]
    search_next_to_library: tuple[str, ...]
    fallback_marker: str
    code_object_suffixes: tuple[str, ...]
    bundle_suffixes: tuple[str, ...]
    wheel_name: str
    wheel_into: str
    wheel_env: str


@functools.cache
def facts() -> Facts:
    data = resources.load("rocblas")
    lib, header, tensile, wheel = data["library"], data["version_header"], data["tensile"], data["wheel"]
    return Facts(
        name=data["name"], soname=lib["soname"], debian_package_prefix=lib["debian_package_prefix"],
        debian_dev_package=lib["debian_dev_package"], version_header=header["path"],
        version_defines=tuple(header["defines"]), search_in_prefix=tuple(tensile["in_prefix"]),
        search_next_to_library=tuple(tensile["next_to_library"]), fallback_marker=tensile["fallback_marker"],
        code_object_suffixes=tuple(tensile["code_object_suffixes"]),
        bundle_suffixes=tuple(tensile["bundle_suffixes"]),
        wheel_name=wheel["name"], wheel_into=wheel["into"], wheel_env=wheel["env"],
    )


def soname() -> str:
    """fnmatch pattern of the fat binary's SONAME: librocblas.so.*."""
    return facts().soname


# -- the Tensile kernel folder ---------------------------------------------------------------

def find_kernel_folder(prefixes: Iterable[Path]) -> Path | None:
    """The Tensile kernel folder under the first prefix that has one (the newest version if
    there are several), e.g. /opt/rocm/lib/rocblas/library or
    /usr/lib/x86_64-linux-gnu/rocblas/4.4.1/library."""
    for prefix in prefixes:
        for pattern in facts().search_in_prefix:
            hits = sorted(p for p in Path(prefix).glob(pattern) if p.is_dir())
            if hits:
                return hits[-1]
    return None


def kernel_folder_rule() -> dict:
    """The kernel folder as a data folder of the wheel (the fields of a runtime rule's
    DataDirRule): found next to the grafted library, only the wheel's target kept."""
    f = facts()
    return {"name": f.wheel_name, "needed_by": f.soname, "search": f.search_next_to_library,
            "into": f.wheel_into, "select": "gpu_target", "env": f.wheel_env}


def targets_in_names(names: Iterable[str]) -> set[str]:
    """Every gfx name the file names mention (fallback files and generic ISAs included)."""
    return {t for n in names for t in gfx.gfx_names_in(n)}


def is_fallback(name: str) -> bool:
    """A file of the generic fallback kernels (..._fallback.dat, ..._fallback_gfx1100.hsaco)."""
    return facts().fallback_marker in name


def kernel_targets(names: Iterable[str]) -> set[str]:
    """gfx targets that file names of a kernel folder show kernels for: the processors named
    by files other than the fallback ones."""
    return {t for n in names if not is_fallback(n) for t in gfx.processors_in(n)}


def kernel_targets_in(folder: Path) -> set[str]:
    """kernel_targets() of the files in `folder` (an empty set if it cannot be read)."""
    try:
        names = [entry.name for entry in Path(folder).iterdir()]
    except OSError:
        return set()
    return kernel_targets(names)


def select_target_files(names: Iterable[str], gpu_target: str) -> list[str]:
    """The names a `gpu_target` wheel keeps, sorted: those that mention no gfx target (the
    arch-independent files) and those that mention only `gpu_target` (xnack variants included)."""
    return sorted(n for n in names if all(t == gpu_target for t in gfx.gfx_names_in(n)))


def is_code_object_file(name: str) -> bool:
    """A file of device code (.co, .hsaco) rather than a library description (.dat, .yaml)."""
    return name.endswith(facts().code_object_suffixes)


def is_bundle_file(name: str) -> bool:
    """A code-object file that is one clang offload bundle (.co), not a plain code object (.hsaco)."""
    return name.endswith(facts().bundle_suffixes)


def foreign_targets(name: str, gpu_target: str) -> list[str]:
    """The gfx names other than `gpu_target` in a file name (a file a `gpu_target` wheel drops)."""
    return [t for t in gfx.gfx_names_in(name) if t != gpu_target]


def is_target_file(name: str, gpu_target: str) -> bool:
    """True when the file name mentions `gpu_target`."""
    return gpu_target in gfx.gfx_names_in(name)


# -- version and names in messages ------------------------------------------------------------

def header_version(include_dirs: Iterable[Path]) -> str | None:
    """rocBLAS's own version (4.4.1 in ROCm 6.4) from rocblas-version.h in the first
    include directory that has a readable one."""
    f = facts()
    for inc in include_dirs:
        try:
            text = (Path(inc) / f.version_header).read_text(errors="replace")
        except OSError:
            continue
        parts = [re.search(rf"#define\s+{re.escape(d)}\s+(\d+)", text) for d in f.version_defines]
        if all(parts):
            return ".".join(m.group(1) for m in parts)
    return None


def label(version: str | None = None) -> str:
    """'rocBLAS 4.4.1', or "this environment's rocBLAS" when the version is unknown."""
    return f"{facts().name} {version}" if version else f"this environment's {facts().name}"


def stack_label(stack: str) -> str:
    """A ROCm stack's rocBLAS before its root exists: 'rocBLAS of ROCm stack 7.2'."""
    return f"{facts().name} of ROCm stack {stack}"


def debian_version(packages: Mapping[str, str]) -> str | None:
    """The Debian version of rocBLAS among {package: version}: the library package's
    (librocblas4, librocblas5), else the -dev package's."""
    f = facts()
    return next((v for p, v in sorted(packages.items())
                 if p.startswith(f.debian_package_prefix) and not p.endswith("-dev")), None) \
        or packages.get(f.debian_dev_package)


def debian_label(packages: Mapping[str, str]) -> str:
    """"Debian's rocBLAS 6.4" from the installed packages, {package: version}."""
    name = f"Debian's {facts().name}"
    version = debian_version(packages)
    if not version:
        return name
    try:
        v = Version(version.split("-")[0].split("+")[0])
        return f"{name} {v.major}.{v.minor}"
    except InvalidVersion:
        return f"{name} {version}"


def label_of(env: object) -> str:
    """The rocblas_label of an environment or session, or label() if it has none."""
    return getattr(env, "rocblas_label", None) or label()
