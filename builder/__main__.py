from builder import check_python

check_python()

from builder.cli import main  # noqa: E402 - after the check, which must run on any Python

main()
