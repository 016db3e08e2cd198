"""Wheel-time stand-ins (builder/rocm/standins.py): made from the consumer's own imports, abort when called."""

import shutil
import subprocess
from pathlib import Path

import pytest

from builder.rocm import standins
from builder.errors import BuildStepError

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

RULE = standins.WheelStandinRule(soname="libsolver.so.4", needed_by="libconsumer.so.*", symbol_prefix="Z3_",
                                 replaces="a solver", why="only an analyzer nobody runs calls it")


def cc(tmp: Path, name: str, source: str, *args: str) -> Path:
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / name
    subprocess.run(["cc", "-fPIC", "-o", str(out), str(src), *args], check=True)
    return out


@pytest.fixture
def consumer(tmp_path):
    """libconsumer.so.1 linked against a real libsolver.so.4 that defines three Z3_ names (it imports two)."""
    real = tmp_path / "real"
    real.mkdir()
    cc(real, "libsolver.so.4", "int Z3_mk_context(void){return 7;} int Z3_del_context(void){return 0;} "
       "int Z3_unused(void){return 1;}", "-shared", "-Wl,-soname,libsolver.so.4")
    lib = cc(tmp_path, "libconsumer.so.1", "int Z3_mk_context(void); int Z3_del_context(void);\n"
             "int analyze(void){ return Z3_mk_context() + Z3_del_context(); }\nint plain(void){ return 42; }",
             "-shared", "-Wl,-soname,libconsumer.so.1", f"-L{real}", "-l:libsolver.so.4")
    return real / "libsolver.so.4", lib


def test_the_standin_defines_what_the_consumer_imports_and_aborts_when_called(tmp_path, consumer):
    original, lib = consumer
    record = standins.make_wheel_standin(RULE, original, ("libsolver4", "4.13-1"), [("libconsumer.so.1", lib)],
                                         tmp_path / "made", standins.host_compiler)
    assert record["symbols"] == ["Z3_del_context", "Z3_mk_context"]
    assert record["version"] == "4.13-1+moshibuild1" and record["made"] == "wheel"
    made = tmp_path / "made" / "libsolver.so.4"
    nm = subprocess.run(["nm", "-D", "--defined-only", str(made)], capture_output=True, text=True).stdout
    assert "Z3_mk_context" in nm and "Z3_unused" not in nm
    main = "int plain(void); int analyze(void);\nint main(int c, char **v){ return c > 1 ? analyze() : plain() - 42; }"
    program = cc(tmp_path, "prog", main, f"-L{tmp_path}", "-l:libconsumer.so.1", f"-Wl,-rpath-link,{made.parent}")
    env = {"LD_LIBRARY_PATH": f"{made.parent}:{tmp_path}"}
    assert subprocess.run([str(program)], env=env).returncode == 0   # loads and works without the real one
    called = subprocess.run([str(program), "analyze"], capture_output=True, text=True, env=env)
    assert called.returncode < 0
    assert "a solver is not shipped (a moshi-build stand-in); called: Z3_mk_context" in called.stderr
    notice = standins.standin_copyright(record)
    assert "when this wheel was assembled" in notice and "writes its name to stderr and aborts" in notice


def test_another_library_linking_it_stops_the_build(tmp_path, consumer):
    original, lib = consumer
    with pytest.raises(BuildStepError, match="libother.so.2 links libsolver.so.4, but its stand-in is only for"):
        standins.make_wheel_standin(RULE, original, None, [("libconsumer.so.1", lib), ("libother.so.2", lib)],
                                    tmp_path / "made", standins.host_compiler)


def test_a_consumer_importing_nothing_of_it_says_to_remove_the_rule(tmp_path, consumer):
    original, _ = consumer
    plain = cc(tmp_path, "libconsumer.so.2", "int f(void){return 1;}", "-shared")
    with pytest.raises(BuildStepError, match=r"imports no Z3_\* symbol of libsolver.so.4: remove its \[\[standin\]\]"):
        standins.make_wheel_standin(RULE, original, None, [("libconsumer.so.2", plain)], tmp_path / "made",
                                    standins.host_compiler)
