"""Stage 6, publishing: the CI matrix of targets and a PEP 503 index of a wheelhouse."""
