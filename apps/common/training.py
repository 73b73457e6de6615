"""Training defaults shared by every app: the base LightningModule (optimiser groups and
LR schedules from the recipe), atomic checkpoints, loggers and callbacks."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from apps.common.errors import UserError
from apps.common.io import atomic_torch_save
from ssmcore.optim import param_groups

SCHEDULERS = ("constant", "cosine", "plateau", "step")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed, so a crash never leaves a torn file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


class TaskModule(pl.LightningModule):
    """Base LightningModule: optimiser with SSM parameter groups and an LR schedule.

    Args:
        lr: learning rate of all non-SSM parameters.
        weight_decay: AdamW weight decay of non-SSM matrices.
        ssm_lr: learning rate of the SSM parameters (A, B, dt, P); defaults to ``lr``.
        ssm_weight_decay: weight decay of the SSM parameters (0 as in the papers).
        scheduler: ``constant``, ``cosine`` (per step, with linear warmup), ``plateau`` or ``step``.
        warmup_steps: linear warmup steps (constant and cosine).
        monitor / monitor_mode: the metric that picks the best checkpoint and drives ``plateau``.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        ssm_lr: float | None = None,
        ssm_weight_decay: float = 0.0,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"model.scheduler: unknown {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if lr <= 0 or (ssm_lr is not None and ssm_lr <= 0):
            raise ValueError(f"model.lr and model.ssm_lr must be positive, got {lr} and {ssm_lr}")
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"model.monitor_mode must be min or max, got {monitor_mode!r}")
        self.optim_config = dict(lr=lr, weight_decay=weight_decay, ssm_lr=ssm_lr, ssm_weight_decay=ssm_weight_decay)
        self.scheduler_name, self.warmup_steps = scheduler, warmup_steps
        self.monitor, self.monitor_mode = monitor, monitor_mode

    def configure_optimizers(self) -> Any:
        groups = param_groups(self, **self.optim_config)
        optimizer = torch.optim.AdamW(groups, lr=self.optim_config["lr"])
        if self.scheduler_name == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=self.monitor_mode, factor=0.5, patience=3)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "monitor": self.monitor}}
        if self.scheduler_name == "step":
            sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, self._epochs() // 3), gamma=0.3)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup, cosine = self.warmup_steps, self.scheduler_name == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _epochs(self) -> int:
        return self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 10


class EpochTimer(Callback):
    """Logs ``time/train_epoch_s``: wall-clock seconds of each training epoch (validation excluded).

    On CUDA the clock waits for queued kernels, so the figure is the epoch's real time.
    """

    def __init__(self) -> None:
        self._start = 0.0

    @staticmethod
    def _sync(pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        pl_module.log("time/train_epoch_s", time.perf_counter() - self._start, on_step=False, on_epoch=True)


class FiniteLoss(Callback):
    """Stops training at the first non-finite loss, before its backward pass can reach the weights.

    The run then ends with one line naming the step; the checkpoints written before it are kept and
    no checkpoint is written from the broken state.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise UserError(f"training stopped: the loss is {float(loss.detach().float().sum())} at epoch "
                            f"{trainer.current_epoch}, step {trainer.global_step}; look for NaN/inf in the data or "
                            "lower the learning rate (checkpoints written before this step are kept)")


def default_callbacks(run_dir: Path, monitor: str, mode: str) -> list[Callback]:
    """Last and best checkpoints under ``run_dir/checkpoints``, a rich progress bar, LR logging,
    the training epoch's wall-clock time (``time/train_epoch_s``) and the finite-loss guard."""
    checkpoints = run_dir / "checkpoints"
    return [
        FiniteLoss(),
        # best by the monitored metric
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                        enable_version_counter=False),
        # last after every epoch, whatever the metric did (resume from it)
        ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False),
        RichProgressBar(leave=True),
        LearningRateMonitor(logging_interval="step"),
        EpochTimer(),
    ]


def default_loggers(run_dir: Path) -> list:
    """CSV and TensorBoard loggers under ``run_dir``."""
    return [CSVLogger(run_dir, name="csv"), TensorBoardLogger(run_dir, name="tensorboard", default_hp_metric=False)]
