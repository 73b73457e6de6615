"""The smoke model: token embedding -> ssmcore SequenceModel -> per-step logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apps.common.training import TaskModule
from apps.smoke.data import IGNORE
from ssmcore.blocks import SequenceModel


class RecallModel(nn.Module):
    """Embedding, a causal SSM stack and a linear read-out: (B, L) tokens -> (B, L, vocab) logits."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, layer: str, dropout: float, layer_kwargs: dict):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.backbone = SequenceModel(d_model, n_layers, layer=layer, d_output=vocab, dropout=dropout, **layer_kwargs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.backbone(self.embed(tokens))
        return y


class DelayedRecallModule(TaskModule):
    """Delayed-recall classifier; logs loss and accuracy on the positions that have a target.

    Args:
        vocab: token values (linked from ``data.vocab``).
        d_model, n_layers: backbone size.
        layer: any ssmcore layer name (``s4d``, ``s4``, ``dss``, ``s5``, ``dlr``, ...).
        layer_kwargs: options of that layer (``d_state``, ``init``, ...).
        dropout: dropout in the backbone.
        (optimiser and schedule options as :class:`apps.common.training.TaskModule`)
    """

    def __init__(
        self,
        vocab: int = 8,
        d_model: int = 64,
        n_layers: int = 2,
        layer: str = "s4d",
        layer_kwargs: dict | None = None,
        dropout: float = 0.0,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        ssm_lr: float | None = 1e-3,
        ssm_weight_decay: float = 0.0,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(lr, weight_decay, ssm_lr, ssm_weight_decay, scheduler, warmup_steps,
                         monitor="val/acc", monitor_mode="max")
        self.save_hyperparameters()
        self.net = RecallModel(vocab, d_model, n_layers, layer, dropout, dict(layer_kwargs or {}))

    def _shared(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        mask = y != IGNORE
        acc = (logits.argmax(-1)[mask] == y[mask]).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train")
        self.log(f"{stage}/acc", acc, prog_bar=True, sync_dist=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0]).argmax(-1)
