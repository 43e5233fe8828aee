"""Benchmarks: run as python bench/<name>.py (they print the machine they ran on)."""
