"""Benchmarks: ``make bench`` (``python -m bench.run``) measures each part against a reference in one run."""
