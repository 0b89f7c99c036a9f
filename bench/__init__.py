"""Benchmarks (not shipped): run them from the repository root, e.g. ``.venv/bin/python bench/relay.py``."""
