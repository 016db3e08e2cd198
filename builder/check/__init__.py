"""Stage 5, checks: `moshi-build verify` on a built wheel (its own reader; comgr asked which code it picks) and size reports."""
