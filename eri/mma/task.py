"""The MMA training task: a thin LightningModule around `MMANet` and `MMALoss`.

Validation runs one dataloader per dataset's val split and keeps torchmetrics states per dataset
(so DDP ranks are reduced by torchmetrics): CCC of valence and of arousal, expression macro-F1
and accuracy, AU macro-F1 at threshold 0.5 over the AUs that dataset labels (an AU it never
labels would score a meaningless 0). Each metric only sees the samples carrying its label.
``val/score`` combines them for checkpoint selection (config ``select``).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MultilabelF1Score
from torchmetrics.regression import ConcordanceCorrCoef

from eri.errors import ConfigError
from eri.mma.losses import LOSS_KEYS, MMALoss
from eri.models.mma import AU_IDS, CHECKPOINT_KEY, EXPRESSIONS, create_mma
from eri.training.task import configure_optimizer


class _SetMetrics(nn.Module):
    def __init__(self, tasks: set, au_labelled: torch.Tensor):
        super().__init__()
        self.tasks = set(tasks)
        self.register_buffer("au_labelled", au_labelled.bool(), persistent=False)
        self.ccc = ConcordanceCorrCoef(num_outputs=2)
        self.f1 = MulticlassF1Score(len(EXPRESSIONS), average="macro")
        self.acc = MulticlassAccuracy(len(EXPRESSIONS), average="micro")
        self.au_f1 = MultilabelF1Score(len(AU_IDS), threshold=0.5, average="none", ignore_index=-1)
        self.seen = {t: False for t in ("va", "expr", "au")}

    def update(self, out: dict, batch: dict) -> None:
        m = batch["va_mask"]
        if "va" in self.tasks and m.any():
            self.ccc.update(out["va"][m].float(), batch["va"][m].float())
            self.seen["va"] = True
        m = batch["expr"] >= 0
        if "expr" in self.tasks and m.any():
            self.f1.update(out["expr"][m], batch["expr"][m])
            self.acc.update(out["expr"][m], batch["expr"][m])
            self.seen["expr"] = True
        if "au" in self.tasks and batch["au_mask"].any():
            target = torch.where(batch["au_mask"], batch["au"].round().long(), torch.full_like(batch["au"], -1).long())
            self.au_f1.update(out["au"].sigmoid(), target)
            self.seen["au"] = True

    def compute(self) -> dict[str, float]:
        res = {}
        if self.seen["va"]:
            c = self.ccc.compute()
            res.update(va_ccc_valence=float(c[0]), va_ccc_arousal=float(c[1]), va_ccc=float(c.mean()))
        if self.seen["expr"]:
            res.update(expr_f1=float(self.f1.compute()), expr_acc=float(self.acc.compute()))
        if self.seen["au"]:
            res["au_f1"] = float(self.au_f1.compute()[self.au_labelled].mean())
        for m in (self.ccc, self.f1, self.acc, self.au_f1):
            m.reset()
        self.seen = {t: False for t in self.seen}
        return res


DEFAULT_SELECT = ("va_ccc", "expr_f1", "au_f1")


class MMATask(L.LightningModule):
    def __init__(self, model: dict, loss: dict, optim: dict, val_sets: dict | None = None, select: dict | None = None):
        """``val_sets``: {name: {"tasks": [...], "au_labelled": [17 bools]}}, one per val dataloader, in order."""
        super().__init__()
        unknown = sorted(set(loss) - set(LOSS_KEYS))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in loss; valid keys: {list(LOSS_KEYS)}")
        self.model_spec = dict(model)
        self.model = create_mma(self.model_spec)
        self.loss = MMALoss(**loss)
        self.optim = dict(optim)
        self.val_names = list(val_sets or {})
        self.val_metrics = nn.ModuleList(
            [_SetMetrics(set(v["tasks"]), torch.as_tensor(v["au_labelled"])) for v in (val_sets or {}).values()]
        )
        self.select = dict(select or {})
        self.results: dict[str, dict] = {}

    def forward(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(self.model.normalize(images_uint8))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, terms = self.loss(self(batch["image"]), batch)
        bs = len(batch["image"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_metrics[dataloader_idx].update(self(batch["image"]), batch)

    def on_validation_epoch_end(self) -> None:
        self.results = {name: m.compute() for name, m in zip(self.val_names, self.val_metrics)}
        flat = {f"{n}/{k}": v for n, r in self.results.items() for k, v in r.items()}
        if not flat:
            return
        if self.select:
            missing = sorted(set(self.select) - set(flat))
            if missing:
                raise ConfigError(f"select names unknown metric(s) {missing}; available: {sorted(flat)}")
            score = sum(w * flat[k] for k, w in self.select.items())
        else:
            vals = [v for k, v in flat.items() if k.split("/")[-1] in DEFAULT_SELECT]
            score = sum(vals) / len(vals)
        self.log_dict({f"val/{k}": v for k, v in flat.items()}, add_dataloader_idx=False)
        self.log("val/score", score, prog_bar=True, add_dataloader_idx=False)
        self.results["score"] = score

    def configure_optimizers(self):
        return configure_optimizer(self.parameters(), self.optim)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The architecture spec (what `load_mma` rebuilds from); RNG states: `eri.training.skeleton.RNGState`."""
        checkpoint[CHECKPOINT_KEY] = _plain(self.model_spec)


def _plain(x):
    """Primitives only, so checkpoints load with ``torch.load(weights_only=True)``."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
