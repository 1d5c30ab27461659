"""Feature extraction: raw videos -> the feature store training reads (`eri.data.store`).

- `eri.features.video`: PyAV decoding (frames + timestamps, 16 kHz mono audio, rotation, VFR).
- `eri.features.faces`: MTCNN detection batched over frames, one face per frame, 5-point alignment.
- `eri.features.extractors`: the registry ``NAME -> class`` (`build_extractor`) and the extractors.
- `eri.features.streams`: the configured streams, their hashes and descriptors (`eri.streams.StreamMeta`).
- `eri.features.config`: the extraction schema, and the extraction config back from a model's stream descriptors.
- `eri.features.pipeline`: the job (layouts, shards, config hashes, report, resume): tools/extract.py.

Submodules are imported on use (PyAV, facenet-pytorch, librosa and transformers are heavy to import).
"""
