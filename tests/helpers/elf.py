"""Real ELF files compiled with the host's gcc, and a fake runtime root filesystem to put them in.

The fake root is laid out like the Debian root the wheels take their runtime
from, reduced to what builder/package reads: etc/ld.so.conf (with an include,
as Debian's), usr/lib/<multiarch> with /lib a symlink to usr/lib (merged /usr),
and a dpkg database (var/lib/dpkg/status, var/lib/dpkg/info/<package>:<arch>.list,
usr/share/doc/<package>/copyright).
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from pathlib import Path

HAVE_GCC = shutil.which("gcc") is not None


def gcc(out: Path, source: str, *, shared: bool = True, soname: str | None = None, rpath: str | None = "$ORIGIN",
        runpath: bool = False, libs: tuple[Path, ...] = (), src_path: Path | None = None,
        link_dirs: tuple[Path, ...] = (), extra: tuple[str, ...] = ()) -> Path:
    """Compile and link one ELF file; `libs` are linked by their exact file names.

    rpath goes into DT_RPATH (runpath=False, how the verify tests' wheels carry it) or
    DT_RUNPATH (runpath=True, what the linker writes by default); None for neither.
    The linker finds the libraries that `libs` need in their folders and in `link_dirs`
    (-rpath-link: nothing of it lands in the output).
    """
    src = src_path or out.with_name(out.name + ".c")
    src.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(source)
    argv = ["gcc", "-O1", "-fPIC", "-o", str(out), str(src), *extra]
    if rpath is not None:
        argv += ["-Wl,--enable-new-dtags" if runpath else "-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
    if shared:
        argv += ["-shared", f"-Wl,-soname,{soname or out.name}"]
    for lib in libs:
        argv += [f"-L{lib.parent}", f"-l:{lib.name}"]
    for d in dict.fromkeys([*(lib.parent for lib in libs), *link_dirs]):
        argv.append(f"-Wl,-rpath-link,{d}")
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return out


@functools.cache
def multiarch() -> str:
    """The host's multiarch triplet (x86_64-linux-gnu): the fake root's library folder."""
    try:
        out = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    return out or f"{platform.machine()}-linux-gnu"


def dpkg_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def in_root(root: Path, path: Path) -> str:
    """The path a file of the fake root has inside it: /usr/lib/..."""
    return "/" + str(Path(path).relative_to(root))


class FakeRoot:
    """A runtime root filesystem in a folder: libraries compiled into it, packages that own them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.libdir = self.path / "usr" / "lib" / multiarch()
        self.libdir.mkdir(parents=True, exist_ok=True)
        (self.path / "etc" / "ld.so.conf.d").mkdir(parents=True, exist_ok=True)
        (self.path / "etc" / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
        (self.path / "etc" / "ld.so.conf.d" / f"{multiarch()}.conf").write_text(
            f"# Multiarch support\n/usr/lib/{multiarch()}\n")
        if not (self.path / "lib").exists():
            (self.path / "lib").symlink_to("usr/lib")          # merged /usr
        (self.path / "var" / "lib" / "dpkg" / "info").mkdir(parents=True, exist_ok=True)
        (self.path / "var" / "lib" / "dpkg" / "status").touch()

    def library(self, soname: str, source: str, *, minor: str = "0.0", libs: tuple[Path, ...] = (),
                runpath: str | None = None, folder: Path | None = None, link_dirs: tuple[Path, ...] = ()) -> Path:
        """Compile `soname` (lib<x>.so.<n>) as its real file lib<x>.so.<n>.<minor> in the library folder
        (or `folder`), with the SONAME symlink beside it as a Debian package installs it; returns the symlink."""
        folder = folder or self.libdir
        out = folder / f"{soname}.{minor}" if minor else folder / soname
        real = gcc(out, source, soname=soname, rpath=runpath, runpath=True, libs=libs, link_dirs=link_dirs,
                   src_path=self.path.with_name(self.path.name + "-src") / (out.name + ".c"))
        link = folder / soname
        if real != link:
            link.symlink_to(real.name)
        return link

    def package(self, name: str, version: str, files: list[Path], copyright: str | None = "Copyright: demo\n") -> None:
        """Record `name` (version, the files it installs, its copyright file) in the dpkg database."""
        arch = dpkg_arch()
        with open(self.path / "var" / "lib" / "dpkg" / "status", "a") as status:
            status.write(f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
                         f"Architecture: {arch}\nVersion: {version}\nDescription: {name}\n\n")
        listed = ["/."]
        for f in files:
            inner = in_root(self.path, f)
            parents = [str(p) for p in reversed(Path(inner).parents) if str(p) != "/"]
            listed += [p for p in parents if p not in listed] + [inner]
        if copyright is not None:
            doc = self.path / "usr" / "share" / "doc" / name
            doc.mkdir(parents=True, exist_ok=True)
            (doc / "copyright").write_text(copyright)
            listed += [f"/usr/share/doc/{name}", f"/usr/share/doc/{name}/copyright"]
        info = self.path / "var" / "lib" / "dpkg" / "info" / f"{name}:{arch}.list"
        info.write_text("\n".join(listed) + "\n")
