"""Proof without a GPU that the HIP runtime picks the wheel's own code objects.

The wheel is unpacked into a root filesystem whose glibc can load its libraries
(the clean root; the host when it is new enough), every offload bundle of every
fat binary (.hip_fatbin) and every Tensile code-object file is written out, and
builder/check/comgr_probe.py runs there with python3 and the wheel's own
libamd_comgr. It asks comgr what the runtime asks (see comgr_probe.py) for the
wheel's target and for every other known target. The answer must be, for every
bundle, a code object whose ELF e_flags name the target (EF_AMDGPU_MACH, the low
byte, from targets.toml) and nothing for any other target. A target wheel
carries the bundles and its base wheel the comgr (docs/WHEEL-PAIR.md): both are
unpacked side by side, as pip installs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

from builder.rocm import offload, rocblas

EF_AMDGPU_MACH = 0xFF
PROBE_SCRIPT = "comgr_probe.py"
PROBE_TIMEOUT = 1800   # seconds; a few hundred bundles take seconds


@dataclasses.dataclass(frozen=True)
class BundleRef:
    member: str              # the wheel member holding it
    index: int               # its place among the member's bundles
    path: str                # where its bytes were written (as the probe sees it)
    compressed: bool


@dataclasses.dataclass
class Selection:
    """What comgr answered, judged."""

    bundles: int
    files: int
    problems: list[str]
    skipped: str | None = None   # why nothing was asked (no device code in the wheel)


class ProbeRoot:
    """Where the probe runs: `root` is a root filesystem ('/' for this machine), `run` runs argv in it."""

    def __init__(self, root: Path, run: Callable[[list[str]], subprocess.CompletedProcess]) -> None:
        self.root = Path(root)
        self.run = run

    @classmethod
    def host(cls) -> "ProbeRoot":
        return cls(Path("/"), lambda argv: subprocess.run([sys.executable, *argv[1:]] if argv[0] == "python3"
                                                          else argv, capture_output=True, text=True,
                                                          timeout=PROBE_TIMEOUT))

    @classmethod
    def of_clean_root(cls, clean) -> "ProbeRoot":
        return cls(clean.root, lambda argv: clean.run(argv, timeout=PROBE_TIMEOUT))

    def inner(self, path: Path) -> str:
        return "/" + str(Path(path).relative_to(self.root)) if self.root != Path("/") else str(path)


def _is_code_object_file(member: str, kernel_folder: str | None) -> bool:
    return bool(kernel_folder) and member.startswith(kernel_folder) and rocblas.is_code_object_file(member)


def write_bundles(unpacked: Path, members: Iterable[str], kernel_folder: str | None,
                  out: Path) -> tuple[list[BundleRef], dict[str, int]]:
    """Every bundle of the fat binaries and code-object files among `members`, written to `out`.

    Returns the bundles and {member: e_flags} of code-object files that are plain ELF
    (.hsaco), which need no comgr to read.
    """
    refs: list[BundleRef] = []
    plain_elf: dict[str, int] = {}
    out.mkdir(parents=True, exist_ok=True)
    for member in sorted(members):
        file = unpacked / member
        with open(file, "rb") as f:
            head = f.read(64)
        if _is_code_object_file(member, kernel_folder):
            if head[:4] == b"\x7fELF":
                plain_elf[member] = int.from_bytes(head[48:52], "little")
                continue
            data = file.read_bytes()
        elif head[:4] == b"\x7fELF":
            data = offload.fatbin_section(file)
            if data is None:
                continue
        else:
            continue
        for i, bundle in enumerate(offload.iter_bundles(data)):
            dest = out / f"{len(refs):05d}.bundle"
            dest.write_bytes(bytes(data[bundle.start:bundle.start + bundle.extent]))
            refs.append(BundleRef(member, i, str(dest), bundle.compressed))
    return refs, plain_elf


def judge(refs: list[BundleRef], answers: list[dict], plain_elf: dict[str, int], target: str,
          machs: dict[str, int]) -> list[str]:
    """Problems with comgr's answers: the target's code object missing or of the wrong kind,
    or a code object found for another target."""
    problems: list[str] = []
    want = machs[target]
    for ref, answer in zip(refs, answers):
        where = f"{posixpath.basename(ref.member)} bundle {ref.index}"
        own = answer.get(target, {})
        if not own.get("size"):
            err = f" ({own['error']})" if own.get("error") else ""
            problems.append(f"{where}: comgr finds no {target} code object{err}")
        elif own.get("e_flags") is None or own["e_flags"] & EF_AMDGPU_MACH != want:
            got = own.get("e_flags")
            problems.append(f"{where}: the {target} code object's e_flags are "
                            f"{'not ELF' if got is None else hex(got)}, not EF_AMDGPU_MACH {want:#x}")
        for isa, other in sorted(answer.items()):
            if isa != target and other.get("size"):
                problems.append(f"{where}: comgr also finds a {isa} code object ({other['size']} bytes)")
    for member, flags in sorted(plain_elf.items()):
        if flags & EF_AMDGPU_MACH != want:
            problems.append(f"{posixpath.basename(member)}: e_flags {flags:#x}, not EF_AMDGPU_MACH {want:#x} "
                            f"of {target}")
    return problems


def check_wheel(wheel: Path, *, target: str, machs: dict[str, int], comgr_member: str | None,
                fatbin_members: Iterable[str], kernel_folder: str | None, probe_root: ProbeRoot,
                comgr_wheel: Path | None = None, comgr_closure: Iterable[str] | None = None) -> Selection:
    """Unpack the wheel under the probe root, ask its comgr, judge the answers.

    comgr_wheel:   the wheel comgr_member is in, when it is not `wheel` (a target wheel's
                   bundles are asked about with its base wheel's comgr, docs/WHEEL-PAIR.md)
    comgr_closure: the members of that wheel comgr needs to load (comgr and its libraries);
                   by default everything in comgr's folder (a self-contained wheel grafts them there)
    """
    fatbin_members = sorted(fatbin_members)
    if target not in machs:
        return Selection(0, 0, [f"no EF_AMDGPU_MACH is known for {target} (targets.toml elf_mach)"])
    with zipfile.ZipFile(wheel) as zf, \
            (zipfile.ZipFile(comgr_wheel) if comgr_wheel is not None else contextlib.nullcontext(zf)) as comgr_zf:
        names = zf.namelist()
        code_files = [m for m in names if _is_code_object_file(m, kernel_folder)]
        if not fatbin_members and not code_files:
            return Selection(0, 0, [], skipped="no fat binary and no code-object file in the wheel")
        if comgr_member is None:
            return Selection(0, 0, ["the wheel has device code but no libamd_comgr to ask"])
        base = probe_root.root / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="moshi-verify-", dir=base))
        try:
            unpacked = work / "wheel"
            wanted = set(fatbin_members) | set(code_files)
            # The members to read, then comgr and what it loads (everything beside it: its grafted
            # libLLVM, z3, ...; or comgr_closure) from the wheel holding it.
            comgr_dir = posixpath.dirname(comgr_member) + "/"
            closure = None if comgr_closure is None else set(comgr_closure) | {comgr_member}
            for name in names:
                if name in wanted:
                    zf.extract(name, unpacked)
            for name in comgr_zf.namelist():
                if (name in closure if closure is not None else name.startswith(comgr_dir)) \
                        and (comgr_zf is not zf or name not in wanted):
                    comgr_zf.extract(name, unpacked)
            try:
                refs, plain_elf = write_bundles(unpacked, wanted, kernel_folder, work / "bundles")
            except offload.BundleFormatError as e:
                return Selection(0, len(wanted), [f"cannot read the offload bundles: {e}"])
            others = sorted(t for t in machs if t != target)
            manifest = {
                "comgr": probe_root.inner(unpacked / comgr_member),
                "bundles": [{"path": probe_root.inner(Path(r.path)), "compressed": r.compressed,
                             "isas": [target, *others]} for r in refs],
            }
            script = work / PROBE_SCRIPT
            script.write_text(resources.files("builder.check").joinpath(PROBE_SCRIPT).read_text())
            (work / "manifest.json").write_text(json.dumps(manifest))
            try:
                r = probe_root.run(["python3", probe_root.inner(script), probe_root.inner(work / "manifest.json"),
                                    probe_root.inner(work / "result.json")])
            except subprocess.TimeoutExpired:
                return Selection(len(refs), len(wanted), [f"the comgr probe did not finish in {PROBE_TIMEOUT} s"])
            if r.returncode != 0:
                tail = (r.stderr or r.stdout or "").strip().splitlines()[-3:]
                return Selection(len(refs), len(wanted), [f"the comgr probe failed (exit {r.returncode}): "
                                                          + " | ".join(tail)])
            try:
                answers = [x["answers"] for x in json.loads((work / "result.json").read_text())["results"]]
            except (OSError, ValueError, KeyError, TypeError) as e:
                return Selection(len(refs), len(wanted), [f"the comgr probe left no readable result: {e}"])
            if len(answers) != len(refs):
                return Selection(len(refs), len(wanted), [f"the comgr probe answered for {len(answers)} of "
                                                          f"{len(refs)} bundles"])
            problems = judge(refs, answers, plain_elf, target, machs)
            return Selection(len(refs) + len(plain_elf), len(wanted), problems)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def default_probe_root(needed_glibc: tuple[int, int] | None, cache_envs: Path,
                       echo: Callable[[str], None] = lambda s: None, suite: str | None = None) -> ProbeRoot:
    """This machine if its glibc loads the wheel's libraries, else the clean root (made if missing).
    suite: run in the clean root of that Debian suite whatever this machine has (a wheel's
    glibc floor is proven on the floor's own system)."""
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    if suite is not None:
        from builder.envs.clean import CleanRoot

        clean = CleanRoot(cache_envs, echo=echo, suite=suite)
        clean.ensure()
        return ProbeRoot.of_clean_root(clean)
    if libc and needed_glibc:
        try:
            have = tuple(int(x) for x in libc.split()[-1].split(".")[:2])
        except ValueError:
            have = (0, 0)
        if have >= needed_glibc:
            return ProbeRoot.host()
    from builder.envs.clean import CleanRoot

    clean = CleanRoot(cache_envs, echo=echo)
    clean.ensure()
    return ProbeRoot.of_clean_root(clean)
