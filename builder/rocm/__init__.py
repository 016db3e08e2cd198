"""ROCm knowledge every stage asks: gfx names and the targets table, rocBLAS, offload bundles, generated stand-ins."""
