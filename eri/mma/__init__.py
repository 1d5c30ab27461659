"""MMA (paper 000, section 3.1): the multi-task frame-level affect CNN, its loss, dataset readers and
training; its checkpoints feed the `mma` and `holistic` extractors (`eri.models.mma.load_mma`)."""
