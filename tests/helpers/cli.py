"""The command line as tests run it."""

from __future__ import annotations


def run_cli(argv: list[str]) -> int:
    """builder.cli.main(argv)'s exit code (0 when it returns)."""
    from builder.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return e.code or 0
    return 0
