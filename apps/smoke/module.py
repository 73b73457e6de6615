"""The smoke model: token embedding -> ssmcore SequenceModel -> per-step logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apps.common.layers import LayerSpec, layer_spec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.smoke.data import IGNORE
from ssmcore.blocks import SequenceModel

#: the default SSM layer and optimiser of the smoke model
SMOKE_LAYER: LayerSpec = {"name": "s4d", "d_state": 64}
SMOKE_OPTIM = OptimConfig(lr=3e-3, ssm_lr=1e-3)


class RecallModel(nn.Module):
    """Embedding, a causal SSM stack and a linear read-out: (B, L) tokens -> (B, L, vocab) logits."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, layer: LayerSpec, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.backbone = SequenceModel(d_model=d_model, n_layers=n_layers, layer=layer, d_output=vocab, dropout=dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.backbone(self.embed(tokens))
        return y


class DelayedRecallModule(TaskModule):
    """Delayed-recall classifier; logs loss and accuracy on the positions that have a target.

    Args:
        vocab: token values (linked from ``data.vocab``).
        d_model, n_layers: backbone size.
        layer: the SSM layer spec, ``{name: s4d, d_state: 32, ...}`` (any ssmcore layer and its options).
        dropout: dropout in the backbone (the layer's own unless ``layer.dropout`` is set).
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
    """

    def __init__(
        self,
        vocab: int = 8,
        d_model: int = 64,
        n_layers: int = 2,
        layer: LayerSpec = SMOKE_LAYER,
        dropout: float = 0.0,
        optim: OptimConfig = SMOKE_OPTIM, compile: bool = False,
    ) -> None:
        super().__init__(optim, default=SMOKE_OPTIM, monitor="val/acc", monitor_mode="max", compile=compile)
        self.save_hyperparameters()
        self.net = RecallModel(vocab=vocab, d_model=d_model, n_layers=n_layers, layer=layer_spec(layer), dropout=dropout)

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
