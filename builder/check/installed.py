"""Wheels installed the way a user installs them, on each system they claim (`moshi-build install-check`).

For each clean root of environments.toml's [clean] suites (bullseye: glibc 2.31 and Python
3.9, the glibc floor; bookworm; trixie), made by the tool:

  install    pip install --no-index --find-links WHEELHOUSE <distribution>, by name, into
             a fresh venv (pip picks the wheels by their tags, and the base the target requires)
  ldd -r     every ELF file of the installed packages: no library, version or symbol missing
  selftest   `moshi-rocm selftest --device CPU`: the tools make speech from a tiny random
             model and transcribe it (frames per second of each)

Nothing is installed on this machine; the roots have no ROCm, no compiler, no FFmpeg.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Callable, Sequence

from packaging.utils import parse_wheel_filename

from builder.errors import ConfigurationError, FatalError

# Runs in the root with the venv's Python: `ldd -r` over every host ELF file below the given
# folders (not the GPU code objects, ELF files for the AMDGPU machine); prints JSON
# {file: [problem lines]} (empty list: the file loads with every symbol bound).
LDD_SCRIPT = r"""
import json, os, re, subprocess, sys
bad = re.compile(r"not found|undefined symbol|version `|no version information|error")
with open(os.path.realpath(sys.executable), "rb") as fh:
    host = fh.read(20)[18:20]          # e_machine of this machine's programs
out = {}
for top in sys.argv[1:]:
    for d, _, files in os.walk(top):
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                head = fh.read(20)
            if head[:4] != b"\x7fELF" or head[18:20] != host:
                continue
            r = subprocess.run(["ldd", "-r", p], capture_output=True, text=True)
            lines = (r.stdout + r.stderr).splitlines()
            out[p] = [l.strip() for l in lines if bad.search(l)] + ([] if r.returncode == 0 else ["exit %d" % r.returncode])
print(json.dumps(out))
"""
_FPS = re.compile(r"^(TTS|STT):.* at ([0-9.]+) frames/s", re.M)


@dataclasses.dataclass
class InstallResult:
    suite: str
    glibc: str = "?"
    python: str = "?"
    installed: str = ""                   # "" until pip succeeded, then the wheels' names
    elf_files: int = 0
    ldd_problems: list[str] = dataclasses.field(default_factory=list)
    selftest_seconds: float | None = None
    selftest: str = ""                    # its frames-per-second lines, or why it failed
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.installed) and not self.ldd_problems and self.selftest_seconds is not None and not self.error

    def row(self) -> str:
        selftest = f"{self.selftest_seconds:.1f} s ({self.selftest})" if self.selftest_seconds is not None else "FAILED"
        return (f"| {self.suite} | glibc {self.glibc}, Python {self.python} | {'yes' if self.installed else 'no'} | "
                f"{self.elf_files} | {len(self.ldd_problems)} | {selftest} |")


def wheel_distribution(wheelhouse: Path, gpu_target: str | None, base: str) -> str:
    """The distribution to install by name: the target's wheel, or the base alone."""
    names = {str(parse_wheel_filename(w.name)[0]) for w in Path(wheelhouse).glob("*.whl")}
    wanted = f"{base}-{gpu_target}" if gpu_target else base
    if wanted not in names:
        raise ConfigurationError(f"no {wanted} wheel in {wheelhouse} (found: {', '.join(sorted(names)) or 'none'})")
    return wanted


def check_in_root(suite: str, wheelhouse: Path, distribution: str, cache_envs: Path,
                  echo: Callable[[str], None] = print, selftest: bool = True) -> InstallResult:
    from builder.envs.clean import CleanRoot

    result = InstallResult(suite)
    root = CleanRoot(cache_envs, suite=suite, echo=echo)
    root.ensure()
    info = root.info()
    result.glibc, result.python = info.get("glibc_version", "?"), info.get("python_version", "?")
    wheels = sorted(Path(wheelhouse).glob("*.whl"))
    try:
        venv = root.install(wheels, f"install-check-{distribution}", by_name=[distribution])
    except FatalError as e:
        result.error = str(e)
        return result
    try:
        listed = venv.run(["python", "-m", "pip", "list", "--format=json"], env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        packages = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
        result.installed = ", ".join(f"{p['name']} {p['version']}" for p in packages if "moshi" in p["name"])
        site = venv.site_packages()
        tops = [str(Path("/") / q.relative_to(root.root)) for q in sorted(venv.host_path(site).glob("moshi_rocm*"))
                if q.is_dir() and not q.name.endswith(".dist-info")]
        r = venv.run(["python", "-c", LDD_SCRIPT, *tops], timeout=1200)
        if r.returncode != 0:
            result.error = f"the ldd script failed: {(r.stderr or r.stdout).strip()[-300:]}"
            return result
        report = json.loads(r.stdout)
        result.elf_files = len(report)
        result.ldd_problems = [f"{Path(f).name}: {line}" for f, lines in sorted(report.items()) for line in lines]
        if selftest:
            start = time.monotonic()
            r = venv.run(["moshi-rocm", "selftest", "--device", "CPU"], timeout=1800)
            if r.returncode == 0:
                result.selftest_seconds = time.monotonic() - start
                result.selftest = "; ".join(f"{tool} {fps} fps" for tool, fps in _FPS.findall(r.stdout)) or "passed"
            else:
                result.error = f"selftest failed: {(r.stderr or r.stdout).strip()[-400:]}"
    finally:
        venv.remove()
    return result


def check_installed(wheelhouse: Path, distribution: str, suites: Sequence[str], cache_envs: Path,
                    echo: Callable[[str], None] = print, selftest: bool = True) -> list[InstallResult]:
    return [check_in_root(s, wheelhouse, distribution, cache_envs, echo, selftest) for s in suites]
