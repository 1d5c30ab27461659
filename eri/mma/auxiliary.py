"""The MMA multi-task loss as an auxiliary term of end-to-end ERI training (`eri.models.e2e`,
``aux_mma_weight``): ERI videos carry no per-frame MMA labels, so the term is computed on the MMA training
images themselves, an endless seeded stream over a `tools/train_mma.py` config's datasets (this package's
data module and mixing sampler), with its own CPU random state so the ERI path draws the same numbers with
or without it."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch

from eri.errors import ConfigError
from eri.mma.config import load_mma_config
from eri.mma.losses import LOSS_KEYS, MMALoss
from eri.mma.train import MMADataModule


class MMAAuxiliary:
    """The MMA training images and loss behind `MMARNN.auxiliary_loss`: a plain object (no weights, not in
    the state dict). The config is read and checked here; the images are read at the first `next_batch`."""

    def __init__(self, path: str, crop_size: int, batch_size: int | None = None):
        if not Path(path).is_file():
            raise ConfigError(f"aux_mma_config: {path} not found or not a file (give a tools/train_mma.py config whose data "
                              "section names the MMA training images, e.g. configs/mma/demo.yaml)")
        overrides = [f"model.crop_size={int(crop_size)}"] + ([f"data.batch_size={batch_size}"] if batch_size else [])
        try:
            cfg = load_mma_config(path, overrides)
        except ConfigError as e:
            raise ConfigError(f"aux_mma_config {path}: {e}") from None
        unknown = sorted(set(cfg.loss) - set(LOSS_KEYS))
        if unknown:
            raise ConfigError(f"aux_mma_config {path}: unknown key(s) {unknown} in loss; valid keys: {list(LOSS_KEYS)}")
        for d in cfg.data.datasets:
            d.val_split = None  # training images only
        self.path, self.cfg, self.loss = str(path), cfg, MMALoss(**cfg.loss)
        self._batches = self._rng = None

    def _start(self) -> None:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        cfg = self.cfg.copy()
        cfg.seed = int(cfg.seed) + 7919 * rank  # each DDP rank draws its own images
        dm = MMADataModule(cfg)
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # synthetic images: generated once per machine
            dm.prepare_data()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        dm.setup("fit")
        loader = dm.train_dataloader()
        if len(loader) == 0:
            raise ConfigError(f"aux_mma_config {self.path}: fewer training images ({len(loader.dataset)}) than "
                              f"one batch ({loader.batch_size}); lower data.batch_size or aux_mma_batch_size")

        def endless():
            for epoch in itertools.count():
                loader.sampler.set_epoch(epoch)
                yield from loader

        self._batches, self._rng = endless(), torch.Generator().manual_seed(int(cfg.seed)).get_state()

    def next_batch(self) -> dict:
        """The next MMA training batch (``eri.mma.data`` samples, uint8 images at the crop size), drawn with
        this object's own CPU random state (augmentation, DataLoader worker seeds), never the global one."""
        if self._batches is None:
            self._start()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng)
            batch = next(self._batches)
            self._rng = torch.get_rng_state()
        return batch
