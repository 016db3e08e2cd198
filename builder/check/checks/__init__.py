"""The checks of `moshi-build verify`, one module each; each module's CHECK (context.Check)
names the check, the kinds of wheel it applies to and its run. check/verify.py runs them in order."""
