"""Benchmarks: each prints its figures next to a named baseline measured in the same run."""
