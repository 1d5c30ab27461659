"""Benchmarks that print numbers (speed and memory targets are checked here, not in timed tests):
`training` (throughput per encoder, batched vs the authors' loop; the demo comparison) and
`extraction` (frames/s per extraction stage). Run through ``tools/benchmark.py``."""
