"""The glibc floor (builder/package/glibc_floor.py, symver.py): real programs built on this
machine's glibc (2.36), lowered to the 2.31 floor with a generated compatibility library.

The fast tests run the lowered files here; the slow ones run them in the clean bullseye
(glibc 2.31) and trixie (2.41) roots the tool makes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.errors import BuildStepError
from builder.package import glibc_floor, rules, symver
from builder.rocm.standins import host_compiler
from tests.helpers.elf import HAVE_GCC, gcc

needs_gcc = pytest.mark.skipif(not HAVE_GCC, reason="needs gcc")
SPEC = rules.load_runtime_spec().glibc_floor

# A program whose constructors count themselves (a C constructor, a preinit entry, and a
# library constructor): on glibc 2.31 a 2.34-linked program runs none of them unless the
# compatibility entry does, and must not run them twice on a new glibc.
PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
int lib_value(void);
static int runs = 0, preinit_runs = 0;
static void preinit(int argc, char **argv, char **envp) { (void)argc; (void)argv; (void)envp; preinit_runs++; }
__attribute__((section(".preinit_array"), used)) static void (*preinit_entry)(int, char **, char **) = preinit;
__attribute__((constructor)) static void count(void) { runs++; }
static void *worker(void *arg) { return arg; }
int main(int argc, char **argv) {
    struct stat st;
    pthread_t t; void *out = 0;
    pthread_create(&t, 0, worker, (void *)7); pthread_join(t, &out);
    printf("constructor=%d preinit=%d library=%d stat=%d thread=%ld\n", runs, preinit_runs, lib_value(),
           stat(argv[0], &st) == 0, (long)out);
    return runs == 1 && preinit_runs == 1 && lib_value() == 1 ? 0 : 1;
}
"""
LIBRARY = r"""
static int lib_runs = 0;
__attribute__((constructor)) static void lib_count(void) { lib_runs++; }
int lib_value(void) { return lib_runs; }
"""
EXPECTED = "constructor=1 preinit=1 library=1 stat=1 thread=7\n"


def floor_spec(**changes) -> glibc_floor.FloorSpec:
    import dataclasses

    return dataclasses.replace(SPEC, **{"private": (), **changes})


def test_elf_hash_is_the_sysv_hash():
    assert symver.elf_hash("GLIBC_2.2.5") == 0x09691A75
    assert symver.elf_hash("") == 0


def fake_table(**symbols) -> glibc_floor.FloorTable:
    return glibc_floor.FloorTable("2.31", {"libc.so.6": frozenset({"GLIBC_2.2.5", "GLIBC_2.12"})},
                                  {"libc.so.6": {n: frozenset(v) for n, v in symbols.items()}})


def test_the_plan_lowers_forwards_writes_and_names_what_it_cannot_provide():
    spec = floor_spec()
    table = fake_table(pthread_create=["GLIBC_2.2.5"], pthread_getname_np=["GLIBC_2.12"])
    catalogue = glibc_floor.load_catalogue()
    needs = {("pthread_create", "GLIBC_2.34"): {"a.so"}, ("pthread_getname_np", "GLIBC_2.34"): {"a.so"},
             ("stat", "GLIBC_2.33"): {"b.so"}, ("__libc_start_main", "GLIBC_2.34"): {"tool"}}
    plan = glibc_floor.plan_compat(needs, spec, table, catalogue)
    assert plan.in_floor == {"pthread_create": "libc.so.6"}
    assert plan.forwards == {"pthread_getname_np": "GLIBC_2.12"}
    assert set(plan.written) == {"stat", "moshi_compat_start_main"}
    assert plan.counts() == {"GLIBC_2.33": 1, "GLIBC_2.34": 2}
    with pytest.raises(BuildStepError, match=r"no_such_function@GLIBC_2.39 \(needed by c.so \(GLIBC_2.39\)\)"):
        glibc_floor.plan_compat({**needs, ("no_such_function", "GLIBC_2.39"): {"c.so"}}, spec, table, catalogue)


def test_the_compatibility_library_never_defines_what_the_floor_has_at_the_baseline():
    table = fake_table(stat=["GLIBC_2.2.5"])    # a floor that had it would bind our reference to ourselves
    plan = glibc_floor.plan_compat({("stat", "GLIBC_2.33"): {"b.so"}}, floor_spec(), table, glibc_floor.load_catalogue())
    assert "stat" not in plan.defines and plan.in_floor == {"stat": "libc.so.6"}


def test_the_floor_table_is_bullseyes_libc():
    table = glibc_floor.load_table(SPEC.version)
    assert table.source["suite"] == "bullseye" and table.source["libc6"].startswith("2.31-")
    assert table.exported("pthread_create", "GLIBC_2.2.5") == "libpthread.so.0"
    assert table.exported("stat", "GLIBC_2.2.5") is None and table.exported("__xstat", "GLIBC_2.2.5") == "libc.so.6"
    assert "GLIBC_2.30" in table.versions["libc.so.6"] and "GLIBC_2.32" not in table.versions["libc.so.6"]
    assert "GCC_4.3.0" in table.versions["libgcc_s.so.1"]


def lowered_program(directory: Path) -> Path:
    """PROGRAM and its library built here, lowered to the floor beside a generated compatibility library."""
    spec = floor_spec()
    lib = gcc(directory / "libctor.so.1", LIBRARY, soname="libctor.so.1", rpath=None)
    prog = gcc(directory / "prog", PROGRAM, shared=False, rpath="$ORIGIN", runpath=True, libs=(lib,),
               extra=("-pthread",))
    needs = glibc_floor.floor_needs([prog, lib], spec)
    assert ("__libc_start_main", "GLIBC_2.34") in needs     # this machine's glibc is 2.34 or newer
    plan = glibc_floor.plan_compat(needs, spec, glibc_floor.load_table(spec.version), glibc_floor.load_catalogue())

    def compile_in(argv, folder):
        host_compiler(folder / "glibc-compat.c", folder / spec.compat_soname, spec.compat_soname, argv=argv)

    compat, record = glibc_floor.make_compat(plan, spec, directory / "compat", compile_in)
    shutil.copy(compat, directory / spec.compat_soname)
    run = lambda argv: subprocess.run(argv, check=True, capture_output=True)
    changes = [glibc_floor.lower_file(f, spec, "patchelf", run) for f in (prog, lib)]
    assert changes[0].entry_renamed and changes[0].links_compat and "GLIBC_2.34" in changes[0].rewritten
    table = glibc_floor.load_table(spec.version)
    compat_defs = {n: {spec.baseline} for n in record["symbols"]}
    for f in (prog, lib, directory / spec.compat_soname):
        assert glibc_floor.needs_at_floor(f, spec, table, compat_defs, set()) == [], f
    return prog


@needs_gcc
def test_a_lowered_program_runs_its_constructors_once_here_without_a_word_on_stderr(tmp_path):
    prog = lowered_program(tmp_path)
    r = subprocess.run([str(prog)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert (r.returncode, r.stdout, r.stderr) == (0, EXPECTED, "")
    v = symver.read_versions(prog)
    assert "__libc_start_main" not in v.imports and v.imports["moshi_compat_start_main"].version == "GLIBC_2.2.5"
    assert not any(SPEC.above(n.version) for n in v.needs if n.file in SPEC.libraries)


@needs_gcc
def test_a_sabotaged_compatibility_library_is_caught(tmp_path):
    prog = lowered_program(tmp_path)
    compat = tmp_path / SPEC.compat_soname
    (tmp_path / "map").write_text("moshi_compat_start_main moshi_compat_start_gone\n")
    subprocess.run(["patchelf", "--rename-dynamic-symbols", str(tmp_path / "map"), str(compat)], check=True)
    exports = {n: vs for n, vs in symver.read_versions(compat).exports.items()}
    problems = glibc_floor.needs_at_floor(prog, floor_spec(), glibc_floor.load_table(SPEC.version), exports, set())
    assert problems == ["prog imports moshi_compat_start_main@GLIBC_2.2.5 (from libc.so.6): neither the floor's "
                        f"glibc nor {SPEC.compat_soname} defines it"]
    r = subprocess.run([str(prog)], capture_output=True, text=True)
    assert r.returncode != 0 and "moshi_compat_start_main" in r.stderr


@pytest.mark.slow
@needs_gcc
@pytest.mark.parametrize("suite", ["bullseye", "trixie"])
def test_a_lowered_program_runs_its_constructors_once_on_the_floor_and_on_a_new_glibc(suite, tmp_path, clean_root_of):
    """bullseye: glibc 2.31, the floor; trixie: 2.41. Same files, same answer, nothing on stderr."""
    prog = lowered_program(tmp_path)
    root = clean_root_of(suite)
    inner = Path("/tmp") / f"floor-{os.getpid()}"
    dest = root.host_path(inner)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(tmp_path, dest, ignore=shutil.ignore_patterns("*.c", "compat"))
    try:
        r = root.run([str(inner / "prog")])
        assert (r.returncode, r.stdout, r.stderr) == (0, EXPECTED, "")
        glibc = root.run(["ldd", "--version"]).stdout.splitlines()[0]
        assert glibc.endswith({"bullseye": "2.31", "trixie": "2.41"}[suite])
        for f in ("prog", "libctor.so.1", SPEC.compat_soname):
            r = root.run(["ldd", "-r", str(inner / f)])
            assert r.returncode == 0 and "not found" not in r.stdout + r.stderr and "undefined" not in r.stderr, r
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.slow
def test_the_shipped_floor_table_is_what_the_floor_suites_libc_exports(clean_root_of):
    """Not a hand-written list: taken again from bullseye's libc (`moshi-build env floor-table`)."""
    import json

    from builder.common import resources
    from tests.helpers.slow import SHARED_CACHE

    clean_root_of(SPEC.suite)
    fresh = glibc_floor.table_of_suite(SPEC, SHARED_CACHE / "envs")
    shipped = json.loads(resources.packaged_text(glibc_floor.table_resource(SPEC)))
    assert glibc_floor.table_differences(shipped, fresh) == []
    assert fresh["source"]["suite"] == "bullseye"
