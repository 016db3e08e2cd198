"""Every `moshi-build` and `moshi-rocm` command and option that README.md and docs/*.md name
exists: in code spans and code blocks, `moshi-build <command> [<subcommand>] ... --option` must
name commands of the click group (builder/cli.py) and options of that command, and
`moshi-rocm <command> ... --option` commands and options of the wheel's launcher
(wheels/src/moshi_rocm, argparse). An option named alone (`--out`) must belong to one of them,
or to another program the docs name (OTHER_PROGRAMS_OPTIONS)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from builder.cli import cli

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
WHEEL_SRC = REPO / "wheels" / "src"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`]+)`")
# Other ways to run the two programs
ALIASES = [(re.compile(r"\bpython3? -m builder\b"), "moshi-build"),
           (re.compile(r"\bpython3? -m moshi_rocm\b"), "moshi-rocm")]
PROGRAMS = ("moshi-build", "moshi-rocm")
# Shell words that end a command in a code block.
SHELL_STOPS = {"|", "||", "&&", ";", ">", ">>", "<", "2>&1"}
OPTION = re.compile(r"^(--?[A-Za-z][\w-]*)")
# Options the docs name of programs other than the two: the moshi.cpp tools (-d, -l, -m, -r,
# -i, -v), pip, pytest and the compilers.
OTHER_PROGRAMS_OPTIONS = {"-d", "-l", "-m", "-r", "-i", "-v", "--editable", "--quiet", "--no-index",
                          "--find-links", "--offload-compress", "-ffile-prefix-map", "-s"}


# --------------------------------------------------------------------------- what exists

class Program:
    """A command tree: path (a tuple of command names) -> its options and its subcommands."""

    def __init__(self, name: str, options: dict[tuple, set[str]], children: dict[tuple, set[str]],
                 default: tuple = ()) -> None:
        self.name = name
        self.options = options          # every path, leaf or group
        self.children = children        # groups only
        self.default = default          # the command `PROGRAM --option` runs (moshi-build: all)

    def all_options(self) -> set[str]:
        return set().union(*self.options.values())


def moshi_build() -> Program:
    help_names = set(cli.context_settings.get("help_option_names", ["--help"]))
    options: dict[tuple, set[str]] = {}
    children: dict[tuple, set[str]] = {}

    def walk(cmd: click.Command, path: tuple) -> None:
        options[path] = help_names | {o for p in cmd.params if isinstance(p, click.Option)
                                      for o in (*p.opts, *p.secondary_opts)}
        if isinstance(cmd, click.Group):
            children[path] = set(cmd.commands)
            for name, sub in cmd.commands.items():
                walk(sub, path + (name,))

    walk(cli, ())
    return Program("moshi-build", options, children, default=("all",))


# Runs in a fresh interpreter with wheels/src on the path: each argparse parser's --help text
# (the launcher's own commands need the wheel's _runtime.json, their modules do not).
_HELP_SCRIPT = r"""
import contextlib, io, json, re, sys
from moshi_rocm import __main__ as top, doctor, models, selftest

def help_of(call):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            call()
        except SystemExit:
            pass
    return out.getvalue()

texts = {"": top.__doc__, "doctor": help_of(lambda: doctor.main(["--help"], {})), "info": "",
         "selftest": help_of(lambda: selftest.main(["--help"])),
         "models": help_of(lambda: models.main(["--help"]))}
subs = re.search(r"\{([\w,]+)\}", texts["models"]).group(1).split(",")
for sub in subs:
    texts["models " + sub] = help_of(lambda: models.main([sub, "--help"]))
print(json.dumps({"commands": list(top.COMMANDS), "models": subs, "help": texts}))
"""


def options_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))


def moshi_rocm() -> Program:
    env = {**os.environ, "PYTHONPATH": str(WHEEL_SRC)}
    r = subprocess.run([sys.executable, "-c", _HELP_SCRIPT], capture_output=True, text=True, env=env,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    texts = found["help"]
    help_names = {"-h", "--help"}
    options = {(): help_names | {o for o in options_in(texts[""]) if o.startswith("--")}}
    for command in found["commands"]:
        options[(command,)] = help_names | options_in(texts[command])
    for sub in found["models"]:
        options[("models", sub)] = help_names | options_in(texts[f"models {sub}"])
    children = {(): set(found["commands"]), ("models",): set(found["models"])}
    return Program("moshi-rocm", options, children)


@pytest.fixture(scope="module")
def programs() -> dict[str, Program]:
    return {"moshi-build": moshi_build(), "moshi-rocm": moshi_rocm()}


# --------------------------------------------------------------------------- what the docs name

def snippets(text: str) -> list[str]:
    """Each line of each code block, and each code span (a span may wrap onto the next line)."""
    found = [line for block in FENCE.findall(text) for line in block.splitlines()]
    for span in SPAN.findall(FENCE.sub("", text)):
        if "\n\n" not in span:
            # in a span, `a | b` and a table's `a\|b` are alternatives, not a pipe
            found.append(re.sub(r"\s*\\?\|\s*", "|", span.replace("\n", " ")))
    return found


def words(snippet: str) -> list[str]:
    for pattern, name in ALIASES:
        snippet = pattern.sub(name, snippet)
    try:
        return shlex.split(snippet, comments=True)
    except ValueError:        # an unbalanced quote in prose
        return snippet.split()


def is_placeholder(word: str) -> bool:
    """COMMAND, <gfx>, [NAME...], ...: stands for a word, is not one."""
    return word.startswith(("<", "[", "...", "$")) or word.rstrip(".").isupper()


def option_words(tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        for part in token.lstrip("[(").split("|"):
            m = OPTION.match(part)
            if m:
                out.append(m.group(1))
    return out


def check_mention(program: Program, tokens: list[str]) -> list[str]:
    """Problems of one `PROGRAM word word ...` mention: unknown commands and options."""
    where = f"`{program.name} {' '.join(tokens)}`".replace(" `", "`")
    paths = [()]
    rest = list(tokens)
    if rest and OPTION.match(rest[0]) and program.default and rest[0] not in program.options[()]:
        paths = [program.default]    # `moshi-build --gpu-targets ...` runs `all`
    while rest and paths[0] in program.children:
        word = rest[0]
        if OPTION.match(word) or is_placeholder(word):
            break
        names = word.split("|")
        unknown = [n for n in names if n not in program.children[paths[0]]]
        if unknown:
            return [f"{where}: {program.name} {' '.join(paths[0] + (unknown[0],))} is not a command "
                    f"(commands: {', '.join(sorted(program.children[paths[0]]))})"]
        paths = [paths[0] + (n,) for n in names]
        rest.pop(0)
    problems = []
    for option in option_words(rest):
        # an option of the command, or of a group on its way (`moshi-build --help`)
        allowed = set().union(*(program.options[p[:i]] for p in paths for i in range(len(p) + 1)))
        if option not in allowed:
            problems.append(f"{where}: {option} is not an option of {program.name} {' '.join(paths[0])}".rstrip())
    return problems


def check_text(text: str, programs: dict[str, Program]) -> tuple[list[str], int]:
    """(problems, number of program mentions) of one document's text."""
    problems, mentions = [], 0
    known = set().union(*(p.all_options() for p in programs.values())) | OTHER_PROGRAMS_OPTIONS
    for snippet in snippets(text):
        tokens = words(snippet)
        starts = [i for i, t in enumerate(tokens) if t in programs]
        for i in starts:
            end = next((j for j in range(i + 1, len(tokens)) if tokens[j] in SHELL_STOPS or tokens[j] in programs),
                       len(tokens))
            problems += check_mention(programs[tokens[i]], tokens[i + 1:end])
            mentions += 1
        if not starts and tokens and OPTION.match(tokens[0]):
            for option in option_words(tokens):
                if option not in known:
                    problems.append(f"`{snippet}`: {option} is an option of neither moshi-build nor moshi-rocm")
    return problems, mentions


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_and_option_a_doc_names_exists(doc, programs):
    problems, _ = check_text(doc.read_text(), programs)
    assert not problems, "\n".join(problems)


def test_the_docs_name_many_commands(programs):
    """The extraction finds the mentions (an empty match would pass everything)."""
    counts = {p: 0 for p in PROGRAMS}
    for doc in DOCS:
        for snippet in snippets(doc.read_text()):
            for token in words(snippet):
                if token in counts:
                    counts[token] += 1
    assert counts["moshi-build"] >= 40 and counts["moshi-rocm"] >= 10, counts
    _, readme_mentions = check_text((REPO / "README.md").read_text(), programs)
    assert readme_mentions >= 10


@pytest.mark.parametrize("text, complaint", [
    ("`moshi-build all --no-such-option`", "--no-such-option is not an option of moshi-build all"),
    ("`moshi-build --gpu-targets gfx1100 --outt DIR`", "--outt is not an option of moshi-build all"),
    ("```\nmoshi-build verify W.whl --json --basse B\n```", "--basse is not an option of moshi-build verify"),
    ("`moshi-build no-such-command`", "moshi-build no-such-command is not a command"),
    ("`moshi-build env create|inspect`", "moshi-build env inspect is not a command"),
    ("`moshi-build env create --json`", "--json is not an option of moshi-build env create"),
    ("`moshi-rocm doctr`", "moshi-rocm doctr is not a command"),
    ("`moshi-rocm models download --jobs 2 --everything`", "--everything is not an option of moshi-rocm models download"),
    ("`moshi-rocm models fetch NAME`", "moshi-rocm models fetch is not a command"),
    ("`python -m moshi_rocm selftest --kep DIR`", "--kep is not an option of moshi-rocm selftest"),
    ("`--made-up-option`", "--made-up-option is an option of neither"),
])
def test_the_check_finds_a_made_up_command_or_option(text, complaint, programs):
    problems, _ = check_text(text, programs)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_the_check_passes_real_commands_and_options(programs):
    text = """
`moshi-build --gpu-targets "gfx1100;gfx1030" --out wheelhouse -j 2` `moshi-build --help`
`moshi-build env create|info|shell|remove` `moshi-build env floor-table --write` `--no-wheel-cache`
`moshi-build targets --markdown --rocm 6.4` `moshi-build verify WHEEL... --base FILE`
`moshi-rocm doctor | info | selftest | models` `moshi-rocm models download NAME... | --all`
`python3 -m moshi_rocm --list` `moshi-rocm selftest --device CPU`
```
pip install moshi-rocm-gfx1100     # brings moshi-rocm
moshi-build release-notes wheelhouse > notes.md && moshi-rocm models path
```
"""
    problems, mentions = check_text(text, programs)
    assert problems == []
    assert mentions == 12


def test_the_verify_page_names_the_checks_by_their_printed_names():
    """docs/VERIFY.md's table of checks: each name is one the code prints (a string literal in
    builder/check/), and every check's own name (NAME = "...") has its row."""
    page = (REPO / "docs" / "VERIFY.md").read_text()
    section = page.split("### The checks", 1)[1].split("\n### ", 1)[0]
    documented = re.findall(r"^\| `([a-z-]+)` \|", section, re.M)
    code = "\n".join(p.read_text() for p in (REPO / "builder" / "check").rglob("*.py"))
    assert len(documented) >= 15
    assert [n for n in documented if f'"{n}"' not in code] == []
    assert set(re.findall(r'^NAME = "([a-z-]+)"', code, re.M)) <= set(documented)
