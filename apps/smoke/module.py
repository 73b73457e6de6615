"""The smoke model: token embedding -> ssmcore SequenceModel -> per-step logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apps.common.distributed import SampleResults
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

    Validation and test metrics are over every target position of the whole split (per-sequence sums
    gathered from every process, :mod:`apps.common.distributed`), so they do not depend on batching or
    on the number of processes.

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
        self.results = SampleResults()

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        mask = y != IGNORE
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(-1)[mask] == y[mask]).float().mean(), prog_bar=True)
        return loss

    def _eval_step(self, batch) -> None:
        x, y = batch
        logits = self.net(x)  # (B, L, vocab)
        mask = y != IGNORE
        losses = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")  # (B, L)
        # per sequence: summed loss, correct and counted target positions
        self.results.add(loss=losses.double().sum(1), correct=((logits.argmax(-1) == y) & mask).sum(1),
                         count=mask.sum(1))

    def _eval_end(self, stage: str) -> None:
        rows = self.results.gather(self.trainer, stage)
        if rows:
            count = rows["count"].sum().clamp_min(1)
            self.log(f"{stage}/loss", float(rows["loss"].sum() / count), prog_bar=True, sync_dist=True)
            self.log(f"{stage}/acc", float(rows["correct"].sum() / count), prog_bar=True, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0]).argmax(-1)
