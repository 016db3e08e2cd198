"""The wheel's package (wheels/src/moshi_rocm) runs on the oldest Python its pyproject.toml.in
promises (Debian 11, RHEL 9: Python 3.9), while the builder and these tests run on 3.11.

ast.parse(feature_version=FLOOR) rejects newer syntax (match, except*, ...); the walk below
catches what still parses but fails on 3.9 at run time: X | Y unions evaluated at run time,
zip(strict=), dataclass(slots=/kw_only=), and modules or names added to the standard library
later. A best-effort list, not a proof: `python -m moshi_rocm` under a real 3.9 is the proof
(test_doctor.py runs it with python3.9 where the machine has one, or MOSHI_ROCM_TEST_PYTHON).
"""

from __future__ import annotations

import ast
import builtins
import tomllib
from pathlib import Path

import pytest

from builder.package import project

FLOOR = (3, 9)
PACKAGE = Path(__file__).resolve().parents[2] / "wheels" / "src" / "moshi_rocm"

NEW_MODULES = {"tomllib", "wsgiref.types"}
NEW_NAMES = {  # module -> names added after 3.9
    "builtins": {"aiter", "anext", "EncodingWarning", "ExceptionGroup", "BaseExceptionGroup"},
    "itertools": {"pairwise", "batched"},
    "datetime": {"UTC"},
    "contextlib": {"chdir", "aclosing"},
    "enum": {"StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember", "global_enum"},
    "typing": {"TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "is_typeddict", "Self", "LiteralString",
               "Never", "assert_never", "assert_type", "reveal_type", "Required", "NotRequired", "TypeVarTuple",
               "Unpack", "dataclass_transform", "get_overloads", "override", "TypeIs", "ReadOnly"},
    "dataclasses": {"KW_ONLY"},
    "types": {"NoneType", "EllipsisType", "NotImplementedType", "UnionType"},
    "inspect": {"get_annotations"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
    "math": {"cbrt", "exp2", "sumprod"},
    "sys": {"orig_argv", "stdlib_module_names", "exception"},
    "asyncio": {"TaskGroup", "timeout", "Runner"},
}
NEW_METHODS = {"bit_count", "hardlink_to", "is_junction", "with_segments", "full_match", "from_uri"}
NEW_KEYWORDS = {"zip": {"strict"}, "dataclass": {"slots", "kw_only", "match_args", "weakref_slot"},
                "field": {"kw_only"}}
TYPE_NAMES = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)} | NEW_NAMES["typing"] | {
    "Any", "Callable", "Dict", "Iterable", "Iterator", "List", "Mapping", "Optional", "Sequence", "Set",
    "Tuple", "Type", "Union", "Path"}


def _looks_like_type(node: ast.expr, classes: set) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute):
        return node.attr in TYPE_NAMES
    return isinstance(node, ast.Name) and (node.id in TYPE_NAMES or node.id in classes)


def floor_problems(source: str, name: str = "<source>") -> list:
    """What in `source` needs a Python newer than FLOOR, as "name:line: what" strings."""
    try:
        tree = ast.parse(source, name, feature_version=FLOOR)
    except SyntaxError as e:
        return ["%s:%s: syntax newer than %d.%d: %s" % ((name, e.lineno) + FLOOR + (e.msg,))]
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations"
               for a in n.names) for n in tree.body)
    annotations = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation is not None:
            annotations.add(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            annotations.add(node.returns)
    in_annotation = {id(n) for a in annotations for n in ast.walk(a)}
    classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    aliases = {}  # local name -> module
    problems = []

    def problem(node, what):
        problems.append("%s:%d: %s (newer than Python %d.%d)" % ((name, node.lineno, what) + FLOOR))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.partition(".")[0]] = a.name
                if a.name in NEW_MODULES:
                    problem(node, "import " + a.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEW_MODULES:
                problem(node, "from %s import" % node.module)
            for a in node.names:
                if a.name in NEW_NAMES.get(node.module, ()):
                    problem(node, "%s.%s" % (node.module, a.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            if id(node) in in_annotation:
                if not lazy:
                    problem(node, "X | Y annotation without `from __future__ import annotations`")
            elif _looks_like_type(node.left, classes) or _looks_like_type(node.right, classes):
                problem(node, "X | Y union evaluated at run time")
        elif isinstance(node, ast.Attribute):
            if node.attr in NEW_METHODS:
                problem(node, "." + node.attr)
            elif isinstance(node.value, ast.Name) and node.attr in NEW_NAMES.get(aliases.get(node.value.id), ()):
                problem(node, "%s.%s" % (aliases[node.value.id], node.attr))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in NEW_NAMES["builtins"]:
            problem(node, node.id)
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            for kw in node.keywords:
                if kw.arg in NEW_KEYWORDS.get(func, ()):
                    problem(node, "%s(%s=...)" % (func, kw.arg))
    return problems


def test_the_template_promises_the_floor_checked_here():
    text = project.render_pyproject((project.TEMPLATE_DIR / "pyproject.toml.in").read_text(), name="moshi-rocm",
                                    version="1.0", summary="s", license="MIT", keywords=[], packages=[], scripts={})
    assert tomllib.loads(text)["project"]["requires-python"] == ">=%d.%d" % FLOOR


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_package_needs_nothing_newer_than_the_floor(path):
    assert floor_problems(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize("source", [
    "match x:\n    case 1:\n        pass\n",
    "try:\n    pass\nexcept* OSError:\n    pass\n",
    "def f(x: int | None) -> str | None:\n    return None\n",
    "from typing import Optional\nAlias = Optional[int] | str\n",
    "class A: pass\nclass B: pass\nok = isinstance(1, A | B)\n",
    "pairs = list(zip([1], [2], strict=True))\n",
    "import dataclasses\n@dataclasses.dataclass(slots=True)\nclass A:\n    x: int\n",
    "from dataclasses import dataclass\n@dataclass(kw_only=True)\nclass A:\n    x: int\n",
    "import tomllib\n",
    "from itertools import pairwise\n",
    "import datetime as dt\nnow = dt.datetime.now(dt.UTC)\n",
    "from typing import Self\n",
    "import contextlib\nwith contextlib.chdir('/'):\n    pass\n",
    "n = (5).bit_count()\n",
    "raise ExceptionGroup('x', [ValueError()])\n",
])
def test_checker_rejects_what_python_3_9_cannot_run(source):
    assert floor_problems(source), source


def test_checker_accepts_what_python_3_9_runs():
    source = ("from __future__ import annotations\nimport os\nfrom pathlib import Path\n"
              "def f(x: int | None, flags: int = os.R_OK | os.W_OK) -> list[str] | None:\n"
              "    y: dict[str, Path] | None = None\n    return [str(x | 0x80 | flags)]\n"
              "print('a'.removeprefix('b'), list(zip([1], [2])))\n")
    assert floor_problems(source) == []
