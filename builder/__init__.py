"""moshi-build: self-contained ROCm wheels of moshi.cpp, one per gfx target."""

__version__ = "0.1.0"
