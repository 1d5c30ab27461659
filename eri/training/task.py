"""The ERI task: a thin LightningModule that owns the loss, the optimiser, routing and the metric.

The model is a plain ``nn.Module`` (see `eri.models`); this wrapper adds what training needs
(and puts the model's `ModelSpec` in every checkpoint, so any checkpoint predicts on its own):
- split-level scoring: each rank keeps its predictions with their dataset positions, they are
  gathered from all ranks at epoch end, de-duplicated (the distributed sampler repeats a few
  videos to even out ranks), completed with the training-label mean for videos that failed the
  invalid-video policy, and only then scored;
- routing (paper 000): parameters the model marks as routed keep their values and optimiser state
  through the optimiser step.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from eri.models.spec import KEY as SPEC_KEY
from eri.models.spec import ModelSpec
from eri.registry import Registry
from eri.training.losses import WeightedLoss
from eri.training.metrics import score

OPTIMIZERS = Registry("optimizer", fixed=("params",))  # config `optim.name`; (params, lr, weight_decay, ...)
OPTIMIZERS.add("adamw", torch.optim.AdamW, description="AdamW: Adam with decoupled weight decay (the papers')")
OPTIMIZERS.add("adam", torch.optim.Adam, description="Adam (weight decay added to the gradient)")
OPTIMIZERS.add("sgd", torch.optim.SGD, description="stochastic gradient descent (momentum, nesterov)")


def configure_optimizer(params, optim: dict):
    """``optim`` = {name, lr, weight_decay, lr_step_epochs, lr_gamma} -> what Lightning's
    ``configure_optimizers`` returns (StepLR per epoch when ``lr_step_epochs`` > 0)."""
    cfg = dict(optim)
    name = cfg.pop("name")
    step, gamma = cfg.pop("lr_step_epochs"), cfg.pop("lr_gamma")
    opt = OPTIMIZERS.resolve(name)(params, **cfg)
    if not step:
        return opt
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=gamma)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class ERITask(L.LightningModule):
    def __init__(self, model: nn.Module, loss: dict, optim: dict, spec: ModelSpec | None = None):
        super().__init__()
        self.model, self.spec = model, spec
        self.loss = WeightedLoss(loss)
        self.optim = dict(optim)
        self.results: dict[str, dict] = {}  # split -> {"pred": (N, 7) all videos, "score": {...} or None}
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._routing_snapshot: list = []

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch["x"], batch["lengths"])

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred = self(batch)
        loss, terms = self.loss(pred, batch["y"])
        bs = len(batch["y"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        if len(terms) > 1:
            self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_epoch=True, batch_size=bs)
        # auxiliary losses of modules that have them (eri.models.e2e: the MMA loss on MMA images), added to the
        # optimised loss; train/loss stays the ERI loss. A model without one runs exactly as without this hook
        aux = [m.auxiliary_loss() for m in self.model.modules() if hasattr(m, "auxiliary_loss")]
        if aux:
            aux = torch.stack(aux).sum()
            self.log("train/aux", aux, on_step=True, on_epoch=True, batch_size=bs)
            loss = loss + aux
        return loss

    def configure_optimizers(self):
        # modules with their own learning rate (eri.models.e2e: the MMA net) get their own optimiser group
        own = [m.param_group(self.optim["lr"]) for m in self.model.modules() if hasattr(m, "param_group")]
        if not own:
            return configure_optimizer(self.parameters(), self.optim)
        taken = {id(p) for g in own for p in g["params"]}
        return configure_optimizer([{"params": [p for p in self.parameters() if id(p) not in taken]}, *own], self.optim)

    def on_train_epoch_start(self) -> None:
        for m in self.model.modules():  # e.g. freezing a backbone for the first epochs (eri.models.e2e)
            if hasattr(m, "set_epoch"):
                m.set_epoch(self.current_epoch)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.spec is not None:
            checkpoint[SPEC_KEY] = self.spec.to_checkpoint()

    # ----------------------------------------------------------------- routing
    def on_before_optimizer_step(self, optimizer) -> None:
        """After backward, before the update: remember the routed entries and their optimiser state."""
        self._routing_snapshot = []
        for param, keep in self.model.routing_masks():
            if self.trainer.world_size > 1:  # the batch is the union of the ranks' batches
                keep = self.all_gather(keep).all(dim=0)
            state = {k: v[keep].clone() for k, v in optimizer.state.get(param, {}).items() if _same_shape(v, param)}
            self._routing_snapshot.append((param, keep, param.detach()[keep].clone(), state))

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        with torch.no_grad():
            for param, keep, values, state in self._routing_snapshot:
                param[keep] = values
                for k, v in optimizer.state.get(param, {}).items():
                    if _same_shape(v, param):  # moments created by this very step start from zero
                        v[keep] = state[k] if k in state else 0
        self._routing_snapshot = []

    # -------------------------------------------------------------- evaluation
    def _collect(self, batch: dict) -> None:
        self._outputs.append((batch["index"], self(batch).detach()))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_split("val")

    def on_test_epoch_end(self) -> None:
        self._finish_split("test")

    def _finish_split(self, split: str) -> None:
        dm = self.trainer.datamodule
        info = dm.splits[split]
        if self._outputs:
            index = torch.cat([i for i, _ in self._outputs]).to(self.device)
            pred = torch.cat([p for _, p in self._outputs])
        else:
            index, pred = torch.zeros(0, dtype=torch.long, device=self.device), torch.zeros(0, 7, device=self.device)
        self._outputs = []
        if self.trainer.world_size > 1:
            index, pred = self.all_gather(index).reshape(-1), self.all_gather(pred).reshape(-1, pred.shape[-1])
        full = np.tile(dm.train_mean.astype(np.float64), (len(info.ids), 1))
        # a video the distributed sampler repeated appears twice: one copy wins, and both agree to
        # float precision because every encoder is padding invariant
        full[index.cpu().numpy()] = pred.double().cpu().numpy()
        result = {"pred": full, "score": score(full, info.labels) if info.labeled and len(full) > 1 else None}
        self.results[split] = result
        if result["score"] is not None:
            self.log(f"{split}/mean_pcc", result["score"]["mean_pcc"], prog_bar=True, sync_dist=False)
            # every rank scored the same gathered split: no sync
            self.log_dict({f"{split}/pcc/{e}": r for e, r in result["score"]["pcc"].items()}, sync_dist=False)


def _same_shape(v, param) -> bool:
    return torch.is_tensor(v) and v.shape == param.shape
