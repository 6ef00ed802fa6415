"""Benchmarks of nba, run by `nba bench` (see benchmarks/cli.py)."""
