"""Reproducible performance runs: `make bench` (python -m benchmarks.run --out docs/benchmarks.md)."""
