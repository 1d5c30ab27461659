"""Benchmarks that print numbers (speed and memory targets are checked here, not in timed tests):
`training` (throughput per encoder, batched vs the authors' loop), `extraction`
(frames/s per extraction stage), `scale` (memory and speed at Hume-Reaction scale), `ensembles`
(combining), `worlds` (the demo's rows across synthetic worlds), `crops` (face-crop encodings) and `e2e`
(the end-to-end model per memory mode). Run through ``tools/benchmark.py`` (``eri benchmark``)."""
