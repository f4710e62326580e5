"""The prediction server's parts below HTTP: preprocessing, runtimes, batching (no TensorFlow
unless a module says so)."""
