"""Benchmarks run on this machine: serve vs the baseline, load test, batch vs serve."""
