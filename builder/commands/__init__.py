"""Commands that use built wheels rather than make them (bench)."""
