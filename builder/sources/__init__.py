"""Stage 1, sources: recipes as typed objects, then fetch, verify, extract and patch each component's source."""
