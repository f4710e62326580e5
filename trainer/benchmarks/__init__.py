"""Benchmarks: training speed and memory, the prediction server."""
