"""Benchmarks: python -m bench.<name>; each prints a table and writes JSON under bench/results/."""
