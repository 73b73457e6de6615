"""Sequence-to-sequence regression for the DLR tasks: real features -> SSM stack -> linear read-out.

The loss is the mean squared error on the task's output positions (the last ``L_out`` steps);
the reported metric is ``R^2 = 1 - SSE / SST`` over the whole evaluation set, where
``SST = sum (y - mean y)^2`` (Gupta, Mehta, Berant 2022 report R^2 the same way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.common.distributed import SampleResults
from apps.common.layers import LayerSpec, layer_spec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.synthetic.tasks import task_dims
from ssmcore.blocks import SequenceModel

#: the default layer and optimiser of a synthetic task model
SYNTHETIC_LAYER: LayerSpec = {"name": "s4d", "d_state": 64}
SYNTHETIC_OPTIM = OptimConfig(lr=3e-3, weight_decay=0.0, ssm_lr=1e-3)


class TaskModel(nn.Module):
    """``Linear(d_in, H)`` -> :class:`SequenceModel` (``n_layers`` causal SSM blocks) -> ``Linear(H, d_out)``.

    ``x`` (B, L_in, d_in) -> (B, L_out, d_out): the read-out of the last ``L_out`` steps.
    """

    def __init__(self, d_input: int, d_output: int, d_model: int, n_layers: int, layer: LayerSpec,
                 ff_expand: int = 2, norm: str = "layer", dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = SequenceModel(d_model=d_model, n_layers=n_layers, layer=layer, d_input=d_input,
                                      d_output=d_output, ff_expand=ff_expand, norm=norm, dropout=dropout)

    def forward(self, x: Tensor, out_len: int) -> Tensor:
        y, _ = self.backbone(x)  # (B, L_in, d_out)
        return y[:, y.shape[1] - out_len :]


class SyntheticModule(TaskModule):
    """Regression on one DLR task; logs ``{stage}/loss`` (MSE) and ``{stage}/r2`` (monitored, max).

    Args:
        task, num_shifts, mips_dim: the task (linked from ``data.*``); they fix the in/out widths.
        d_model, n_layers: backbone size.
        layer: the SSM layer spec, ``{name: dlr, d_state: 512, ...}`` (any ssmcore layer and its options).
        ff_expand: feed-forward expansion after each SSM block (0: none).
        norm: ``layer``, ``batch`` or ``none`` in the residual blocks (``none`` keeps a stack of linear
            layers exactly linear, which the kernel tasks such as Shift reward).
        dropout: dropout in the backbone.
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
    """

    def __init__(
        self,
        task: str = "shift",
        num_shifts: int = 8,
        mips_dim: int = 4,
        d_model: int = 64,
        n_layers: int = 2,
        layer: LayerSpec = SYNTHETIC_LAYER,
        ff_expand: int = 2,
        norm: str = "layer",
        dropout: float = 0.0,
        optim: OptimConfig = SYNTHETIC_OPTIM, compile: bool = False,
    ) -> None:
        super().__init__(optim, default=SYNTHETIC_OPTIM, monitor="val/r2", monitor_mode="max", compile=compile)
        self.save_hyperparameters()
        d_input, d_output = task_dims(task, num_shifts, mips_dim)
        self.net = TaskModel(d_input=d_input, d_output=d_output, d_model=d_model, n_layers=n_layers,
                             layer=layer_spec(layer), ff_expand=ff_expand, norm=norm, dropout=dropout)
        #: per-example sums (SSE, sum y, sum y^2, count), gathered over every DDP process at the epoch's end
        self.results = SampleResults()

    def forward(self, x: Tensor, out_len: int) -> Tensor:
        """``x`` (B, L_in, d_in) -> prediction (B, out_len, d_out)."""
        return self.net(x, out_len)

    def _shared(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        pred = self.net(x, y.shape[1])
        loss = F.mse_loss(pred, y)
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/r2", 1 - loss.detach() / y.var(unbiased=False).clamp_min(1e-12), prog_bar=True)
        else:
            # per example: SSE, sum y, sum y^2 and count, for an exact R^2 and MSE over the whole set
            y64, err = y.double().flatten(1), (pred.detach() - y).double().flatten(1)
            self.results.add(sums=torch.stack([err.pow(2).sum(1), y64.sum(1), y64.pow(2).sum(1),
                                               torch.full_like(y64[:, 0], y64.shape[1])], 1))
        return loss

    def _epoch_r2(self, stage: str) -> None:
        # every example of the split once, whatever the number of processes (apps.common.distributed)
        rows = self.results.gather(self.trainer, stage)
        if not rows:
            return
        sse, s1, s2, n = rows["sums"].sum(0).tolist()
        sst = max(s2 - s1 * s1 / n, 1e-12)
        self.log(f"{stage}/loss", sse / n, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/r2", 1.0 - sse / sst, prog_bar=True, sync_dist=True)

    def training_step(self, batch, batch_idx):
        return self._shared(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._epoch_r2("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_r2("test")

    def predict_step(self, batch, batch_idx):
        x, y = batch
        return self.net(x, y.shape[1])
