"""Benchmarks behind the README numbers; run from the repo root as `python -m bench.<name>`."""
