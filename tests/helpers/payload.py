"""A tiny but real input for staging and build_wheel: one step prefix, a fake runtime root, rules.

  prefix (step "tiny")   bin/tiny-tool        links libtiny-core (ours) and libfoo (the root's);
                                              built with -g and an absolute build RUNPATH
                         lib/libtiny-core.so.1.0 (+ .so.1 and .so symlinks)
                         bin/tiny-config.json a data file next to the tool
                         include/tiny.h       not shipped
  root                   libfoo.so.1   (package libfoo1)  needs libbar.so.2 and libz.so.1, and
                                       opens libfoo-plugin.so.1 with dlopen()
                         libbar.so.2   (libbar2, no SPDX rule: LicenseRef-Debian-libbar2)
                         libfoo-plugin.so.1 (libfoo1)     needs libqux.so.0
                         libqux.so.0   (libqux0)
                         libz.so.1     (zlib1g)           a name every manylinux policy leaves to the system
                         foo/2.0/data/ a data folder next to libfoo: one arch-independent file and
                                       one file for each of gfx1100 and gfx1030

The tool prints what each library returned, so running it from a repaired wheel proves the
grafted closure and the dlopen'd library load from the wheel alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from builder.package import rules
from tests.helpers.elf import FakeRoot, gcc

TOOL = "tiny-tool"
DISTRIBUTION = "tiny-rocm-{gpu_target}"
LIBS_DIR = "tiny_rocm_gfx1100.libs"        # auditwheel's folder for gfx1100
TOOL_OUTPUT = "core 1 foo 2 plugin 13\n"

RUNTIME_RULES = {
    "schema_version": 1,
    "wheel": {
        "distribution": DISTRIBUTION, "package": "moshi_rocm",   # the package of the wheels/ template
        "summary": "tiny test tools for {gpu_target}", "keywords": ["tiny", "{gpu_target}"],
        "version_format": "{release}.post{build_number}", "bin_dir": "bin", "lib_sdir": ".libs",
    },
    "payload": {"libraries": ["lib/*.so", "lib/*.so.*"], "data": ["bin/*.json"]},
    "launcher": {"device_flags": ["-d"], "device_aliases": [{"from": "HIP", "to": "ROCm"}]},
    "dlopen": [{"soname": "libfoo-plugin.so.1", "needed_by": "libfoo.so.*", "reason": "libfoo opens its plugin"},
               {"soname": "libnever.so.1", "needed_by": "libnothing.so.*", "reason": "no such opener here"}],
    "data_dir": [{"name": "foo data", "needed_by": "libfoo.so.*", "search": ["foo/*/data"], "into": "foo/data",
                  "select": "gpu_target", "env": "FOO_DATA"}],
    "debian_licenses": {"libfoo*": "MIT", "libqux0": "BSD-3-Clause"},
}

CORE = "int core(void) { return 1; }\n"
FOO = """\
#include <dlfcn.h>
#include <string.h>
int bar(void);
const char *zlibVersion(void);
int foo(void) { return bar() + (strlen(zlibVersion()) > 0 ? 0 : 100); }
int foo_plugin(void) {
    void *h = dlopen("libfoo-plugin.so.1", RTLD_NOW);
    if (!h) return -1;
    int (*plugin)(void) = (int (*)(void))dlsym(h, "plugin");
    return plugin ? plugin() : -2;
}
"""
TOOL_SOURCE = """\
#include <stdio.h>
int core(void); int foo(void); int foo_plugin(void);
int main(void) { printf("core %d foo %d plugin %d\\n", core(), foo(), foo_plugin()); return 0; }
"""


@dataclasses.dataclass
class TinyInputs:
    root: FakeRoot
    prefix: Path
    license: Path

    @property
    def prefixes(self) -> dict[str, Path]:
        return {"tiny": self.prefix}

    @property
    def data_source(self) -> Path:
        return self.root.libdir / "foo" / "2.0" / "data"


def runtime_spec() -> rules.RuntimeSpec:
    return rules.parse_runtime_spec(RUNTIME_RULES, "tiny-runtime.toml")


def make_tiny_inputs(directory: Path) -> TinyInputs:
    root = FakeRoot(directory / "root")
    z = root.library("libz.so.1", 'const char *zlibVersion(void) { return "1.3"; }\n', minor="3")
    root.package("zlib1g", "1:1.3-1", [z, z.with_name("libz.so.1.3")])
    bar = root.library("libbar.so.2", "int bar(void) { return 2; }\n")
    root.package("libbar2", "1.2-1", [bar, bar.with_name("libbar.so.2.0.0")])
    qux = root.library("libqux.so.0", "int qux(void) { return 3; }\n")
    root.package("libqux0", "0.9-2", [qux, qux.with_name("libqux.so.0.0.0")])
    foo = root.library("libfoo.so.1", FOO, libs=(bar, z))
    plugin = root.library("libfoo-plugin.so.1", "int qux(void); int plugin(void) { return qux() + 10; }\n",
                          libs=(qux,))
    data = root.libdir / "foo" / "2.0" / "data"
    data.mkdir(parents=True)
    for name in ("common.dat", "kern_gfx1100.dat", "kern_gfx1030.dat"):
        (data / name).write_text(name)
    root.package("libfoo1", "2.0-3", [foo, foo.with_name("libfoo.so.1.0.0"), plugin,
                                      plugin.with_name("libfoo-plugin.so.1.0.0"), *sorted(data.iterdir())],
                 copyright="Copyright: foo authors\nLicense: MIT\n")

    prefix = directory / "prefix"
    src = directory / "prefix-src"
    core = gcc(prefix / "lib" / "libtiny-core.so.1.0", CORE, soname="libtiny-core.so.1", rpath=None,
               src_path=src / "core.c")
    (prefix / "lib" / "libtiny-core.so.1").symlink_to(core.name)
    (prefix / "lib" / "libtiny-core.so").symlink_to("libtiny-core.so.1")
    # As an install step leaves it: debug information, and a RUNPATH naming the build's prefix.
    gcc(prefix / "bin" / TOOL, TOOL_SOURCE, shared=False, rpath=str(prefix / "lib"), runpath=True,
        libs=(prefix / "lib" / "libtiny-core.so", foo), src_path=src / "tool.c", extra=("-g",))
    (prefix / "bin" / "tiny-config.json").write_text('{"model": "tiny"}\n')
    (prefix / "include").mkdir()
    (prefix / "include" / "tiny.h").write_text("int core(void);\n")
    license = directory / "src" / "LICENSE"
    license.parent.mkdir(parents=True)
    license.write_text("MIT License\n")
    return TinyInputs(root, prefix, license)
