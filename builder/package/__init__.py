"""Stage 4, packaging: the payload of one wheel, its runtime closure from the root, and the repaired wheel."""
