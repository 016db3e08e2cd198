"""Stage 3, builds: each recipe step run once per key (per gfx target where it must), cached by its inputs."""
