"""Benchmark scripts (``python -m vaebench.benchmarks.NAME``): measurements, not tests."""
