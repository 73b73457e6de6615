"""Sequence regression on the pendulum frames: encoder -> SSM stack -> ``(sin, cos)`` at every observation.

With ``use_times`` the SSM layers get the per-step time steps ``dt`` (the gap since the previous
observation, in units of the grid step): S5 then discretises each step by its true duration.
Without, the same model treats the observations as evenly spaced: the time-stamp-blind baseline.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from apps.common.distributed import SampleResults
from apps.common.errors import UserError
from apps.common.layers import LayerError, LayerSpec, layer_spec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from ssmcore.blocks import SequenceModel, time_steps
from ssmcore.registry import dt_layer_names

PENDULUM_LAYER: LayerSpec = {"name": "s5", "d_state": 32}
PENDULUM_OPTIM = OptimConfig(lr=3e-3, weight_decay=0.01, ssm_lr=1e-3, scheduler="cosine", warmup_steps=50)


class PendulumModule(TaskModule):
    """Regresses ``(sin theta, cos theta)`` of every frame; logs ``{stage}/mse`` (monitored, min).

    Args:
        frame_size: pixels per side of the frames (24).
        step: the nominal time step in seconds (the grid step of the data, 0.05): ``dt = gap / step``.
        use_times: feed the observation times to the SSM layers (needs a layer that takes ``dt``:
            s5, s5_ptd); False gives the time-stamp-blind baseline.
        d_model, n_layers, ff_expand, norm, dropout: the backbone (:class:`ssmcore.blocks.SequenceModel`).
        layer: the SSM layer spec.
        hidden: width of the frame encoder's hidden layer.
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
        compile: ``torch.compile`` the SSM backbone (``--model.compile true``; see :class:`TaskModule`).
    """

    network_attr = "backbone"

    def __init__(
        self,
        frame_size: int = 24,
        step: float = 0.05,
        use_times: bool = True,
        d_model: int = 64,
        n_layers: int = 4,
        layer: LayerSpec = PENDULUM_LAYER,
        ff_expand: int = 2,
        norm: str = "layer",
        dropout: float = 0.0,
        hidden: int = 128,
        optim: OptimConfig = PENDULUM_OPTIM,
        compile: bool = False,
    ) -> None:
        super().__init__(optim, default=PENDULUM_OPTIM, monitor="val/mse", monitor_mode="min", compile=compile)
        self.save_hyperparameters()
        spec = layer_spec(layer, default="s5")
        if use_times and spec["name"] not in dt_layer_names():
            raise LayerError(f"model.layer.name: {spec['name']!r} cannot take observation times; choose one of "
                             f"{', '.join(dt_layer_names())}, or set model.use_times false for the time-blind model")
        if step <= 0:
            raise LayerError(f"model.step: must be positive (the grid step in seconds), got {step}")
        self.encoder = nn.Sequential(nn.Linear(frame_size * frame_size, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        #: per-sequence squared errors of an evaluation epoch, gathered over every DDP process at its end
        self.results = SampleResults()
        self.backbone = SequenceModel(d_model=d_model, n_layers=n_layers, layer=spec, d_output=2,
                                      ff_expand=ff_expand, norm=norm, dropout=dropout)

    def setup(self, stage: str) -> None:
        """Refuse, before any work, frames of another size than the encoder takes (one line, exit 2)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        size = getattr(datamodule, "frame_size", None)
        if size is not None and size != self.hparams.frame_size:
            raise UserError(f"model.frame_size is {self.hparams.frame_size} but data.root {datamodule.hparams.root} "
                            f"holds {size}x{size} frames: set --model.frame_size {size} to train on them (a checkpoint "
                            f"takes frames of the size it was trained on)")

    def forward(self, frames: Tensor, times: Tensor) -> Tensor:
        """``frames`` (B, L, size*size), ``times`` (B, L) seconds -> ``(sin, cos)`` (B, L, 2)."""
        dt = time_steps(times, unit=self.hparams.step) if self.hparams.use_times else None
        y, _ = self.backbone(self.encoder(frames), dt=dt)
        return y

    def training_step(self, batch, batch_idx):
        frames, times, targets = batch
        loss = F.mse_loss(self(frames, times), targets)
        self.log("train/mse", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor, Tensor]) -> None:
        frames, times, targets = batch
        self.results.add(sq=(self(frames, times) - targets).square().flatten(1).mean(1).double())

    def _epoch_end(self, stage: str) -> None:
        rows = self.results.gather(self.trainer, stage)  # every sequence once, from every DDP process
        if rows:
            self.log(f"{stage}/mse", float(rows["sq"].mean()), prog_bar=True, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def predict_step(self, batch, batch_idx):
        frames, times, _ = batch
        return self(frames, times)
