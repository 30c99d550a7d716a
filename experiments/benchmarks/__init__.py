"""Benchmarks: each module is runnable with `python -m experiments.benchmarks.<name>` and writes its results under results/."""
