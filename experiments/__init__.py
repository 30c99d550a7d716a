"""Experiments: configs, benchmarks and results (never imported by the jaxcnn package)."""
