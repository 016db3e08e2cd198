"""python -m moshi_rocm TOOL [ARGS...] | --list | --info"""

from __future__ import annotations

import json
import sys

from ._launcher import LauncherError, console_entry, runtime_info


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        info = runtime_info()
    except LauncherError as e:
        print(f"moshi_rocm: {e}", file=sys.stderr)
        return 127
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"tools: {', '.join(info.get('tools', []))}")
        return 0 if argv else 2
    if argv[0] == "--list":
        print("\n".join(info.get("tools", [])))
        return 0
    if argv[0] == "--info":
        print(json.dumps(info, indent=2))
        return 0
    sys.argv = [argv[0], *argv[1:]]
    return console_entry(argv[0])()


if __name__ == "__main__":
    sys.exit(main())
