"""Sequence classifier for the robustness study: SSM stack -> mean over time -> linear head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.common.layers import LayerSpec, layer_spec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from ssmcore.blocks import SequenceModel

#: the default layer and optimiser of the robustness classifier
CLASSIFIER_LAYER: LayerSpec = {"name": "s4d", "d_state": 64}
CLASSIFIER_OPTIM = OptimConfig(lr=3e-3, ssm_lr=1e-3)


class SequenceClassifier(TaskModule):
    """``x`` (B, L, d_input) -> logits (B, n_classes): ``Linear`` encoder, ``n_layers`` SSM blocks,
    mean pooling over the L steps, linear head.  Logs ``{stage}/loss`` and ``{stage}/acc``
    (monitored, max).

    Args:
        d_input, n_classes: input channels and classes.
        d_model, n_layers, layer (a layer spec), ff_expand, dropout: the backbone
            (:class:`ssmcore.blocks.SequenceModel`).
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
    """

    def __init__(
        self,
        d_input: int = 1,
        n_classes: int = 10,
        d_model: int = 64,
        n_layers: int = 2,
        layer: LayerSpec = CLASSIFIER_LAYER,
        ff_expand: int = 2,
        dropout: float = 0.0,
        optim: OptimConfig = CLASSIFIER_OPTIM, compile: bool = False,
    ) -> None:
        super().__init__(optim, default=CLASSIFIER_OPTIM, monitor="val/acc", monitor_mode="max", compile=compile)
        self.save_hyperparameters()
        self.backbone = SequenceModel(d_model=d_model, n_layers=n_layers, layer=layer_spec(layer), d_input=d_input,
                                      ff_expand=ff_expand, dropout=dropout)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, L, d_input) -> logits (B, n_classes)."""
        h, _ = self.backbone(x)  # (B, L, H)
        return self.head(h.mean(dim=1))

    def _shared(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train")
        self.log(
            f"{stage}/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True, sync_dist=stage != "train"
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared(batch, "test")

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor, batch_size: int = 250) -> float:
        """Accuracy on ``(x (N, L, C), y (N,))`` in eval mode, in batches."""
        self.eval()
        correct = 0
        for i in range(0, len(y), batch_size):
            xb = x[i : i + batch_size].to(self.device)
            correct += int((self(xb).argmax(-1).cpu() == y[i : i + batch_size]).sum())
        return correct / len(y)
