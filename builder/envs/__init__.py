"""Stage 2, environments: where the compilers run (and the clean root wheels are tried in).

One module per kind behind one interface (BuildEnvironment / EnvSession):

  host    the machine's own ROCm (ROCM_PATH or `hipconfig` on PATH), HIP >= 6.1
  debian  a Debian trixie root filesystem with a ROCm stack (resources/stacks.toml:
          7.2 from experimental, 6.4 from sid), made by mmdebstrap under the
          cache and entered with chroot

    env = get_environment(None, cache.envs)   # host if usable, else debian
    env.ensure()                              # create (debian) or check (host)
    with env.session([cache.root]) as s:      # host paths visible at the same paths
        subprocess.run(s.wrap(argv, cwd, s.base_env()), cwd=cwd)
"""

from __future__ import annotations

from pathlib import Path

from builder.envs.base import BuildEnvironment, EnvSession, load_config
from builder.envs.debian import DebianEnvironment, DebianSession, DebianSpec
from builder.envs.host import HostEnvironment, HostSession
from builder.envs.stacks import RocmStack, default_stack_name, get_stack, stack_names
from builder.errors import ConfigurationError

KINDS = ("auto", "host", "debian")

__all__ = [
    "KINDS", "BuildEnvironment", "EnvSession", "HostEnvironment", "HostSession",
    "DebianEnvironment", "DebianSession", "DebianSpec", "get_environment", "load_config",
    "RocmStack", "default_stack_name", "get_stack", "stack_names",
]


def get_environment(kind: str | None, cache_dir: Path, *, check_valid_until: bool = False,
                    environ: dict[str, str] | None = None, rocm: str | None = None) -> BuildEnvironment:
    """The environment of `kind`; None or "auto": the host if it has ROCm >= 6.1, else debian.

    `cache_dir` is the directory environments live in (normally CACHE/envs).
    `check_valid_until` makes apt check Release files' Valid-Until (off by default:
    the registry reached here serves stale ones). `rocm` names the ROCm stack of the
    debian root (resources/stacks.toml; None: its default).
    """
    stack = get_stack(rocm)  # an unknown name fails here, whatever the kind
    kind = (kind or "auto").lower()
    if kind not in KINDS:
        raise ConfigurationError(f"unknown build environment {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind in ("auto", "host"):
        host = HostEnvironment(environ)
        if kind == "host" or host.usable():
            return host
    return DebianEnvironment(Path(cache_dir), check_valid_until=check_valid_until, stack=stack)
