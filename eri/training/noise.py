"""Lightning's advertising and chatter, silenced where eri builds a trainer (`quiet_lightning`).

Silenced: its INFO lines ("GPU available: False, used: False", "TPU/HPU available", "💡 Tip: ... try
installing [litmodels]/[litlogger]", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES", "Restoring states from
the checkpoint path", "`Trainer.fit` stopped") and deprecations inside Lightning's own code that no
user can act on (its use of torch's pytree ``LeafSpec``). Lightning's WARNING-level messages, its
warnings about the user's settings (e.g. the logging interval), and every one of eri's own still show.
"""

from __future__ import annotations

import logging
import warnings

LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",  # GPU/TPU/HPU available, the tips, fit stopped, restoring states
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",  # LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES
    "lightning.fabric.accelerators.cuda",
)
KNOWN_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch 2.9 vs lightning.pytorch.utilities._pytree
)


def quiet_lightning() -> None:
    """Idempotent; called by `eri.training.skeleton.build_trainer` (every training and evaluation)."""
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
