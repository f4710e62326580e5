"""Benchmarks: `vertex-trainer benchmark` (training: speed, accuracy, memory; one module per
section under sections/, sharing runner and markdown), and the prediction server's
(`benchmark-serving`, serving_memory)."""
