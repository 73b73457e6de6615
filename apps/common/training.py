"""Training defaults shared by every app: the base LightningModule (the optimiser of its ``optim``
section), atomic checkpoints, loggers and callbacks."""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import (
    Callback,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from apps.common.errors import UserError
from apps.common.io import atomic_torch_save
from apps.common.optim import OPTIM_FIELDS, OptimConfig, configure_optimizers
from apps.common.pretrained import PretrainedMixin


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed, so a crash never leaves a torn file; they are read
    with ``weights_only=True`` and the allow-list of :mod:`apps.common.checkpoint` (``--ckpt_path`` included)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: _PATH, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        from apps.common.checkpoint import read_checkpoint

        return read_checkpoint(path, map_location=map_location)


class TaskModule(PretrainedMixin, pl.LightningModule):
    """Base LightningModule: the optimiser and LR schedule of ``optim`` (:class:`apps.common.optim.OptimConfig`),
    and ``save_pretrained(dir)`` / ``from_pretrained(dir)`` (:mod:`apps.common.pretrained`) for every app's model.

    Args:
        optim: an :class:`OptimConfig`, or a mapping of its fields laid over ``default``.
        default: the subclass's default optimiser settings.
        monitor / monitor_mode: the metric that picks the best checkpoint and drives ``plateau``.
        compile: ``torch.compile`` the network (the submodule named by ``network_attr``) in place when a
            Trainer sets the model up (``--model.compile true``); a run-time switch, not saved in the checkpoint.

    The older call ``TaskModule(lr, weight_decay, ssm_lr, ssm_weight_decay, scheduler, warmup_steps[,
    monitor, monitor_mode])`` is still accepted (a number first).
    """

    #: the attribute holding the app's nn.Module, the one that ``compile`` compiles
    network_attr = "net"

    def __init__(self, optim: OptimConfig | Mapping[str, Any] | float | None = None, *legacy: Any,
                 default: OptimConfig | None = None, monitor: str = "val/loss", monitor_mode: str = "min",
                 compile: bool = False) -> None:
        super().__init__()
        self.compile_network = bool(compile)
        if isinstance(optim, (int, float)) and not isinstance(optim, bool):  # the positional form
            values = dict(zip((*OPTIM_FIELDS, "monitor", "monitor_mode"), (optim, *legacy), strict=False))
            monitor, monitor_mode = values.pop("monitor", monitor), values.pop("monitor_mode", monitor_mode)
            optim = values
        self.optim = OptimConfig.of(optim, default)
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"model.monitor_mode must be min or max, got {monitor_mode!r}")
        self.monitor, self.monitor_mode = monitor, monitor_mode

    def save_hyperparameters(self, *args: Any, ignore: Sequence[str] | str | None = None, frame: Any = None,
                             logger: bool = True) -> None:
        """Lightning's, with ``optim`` saved as plain values (a checkpoint then needs no class to load)."""
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        super().save_hyperparameters(*args, ignore=[*ignore, "compile"], frame=frame or inspect.currentframe().f_back,
                                     logger=logger)
        for hparams in (self._hparams, getattr(self, "_hparams_initial", None)):
            if hparams is not None and "optim" in hparams:
                hparams["optim"] = self.optim.as_dict()

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self, self.optim, self.monitor, self.monitor_mode)

    def configure_model(self) -> None:
        """With ``compile``: ``torch.compile`` the network in place (``nn.Module.compile``: its parameter names and
        the checkpoint's keys stay as they are); once, before the Trainer wraps the model."""
        network = getattr(self, self.network_attr, None)
        if self.compile_network and isinstance(network, torch.nn.Module) and network._compiled_call_impl is None:
            network.compile()


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


class EMAWeights(EMAWeightAveraging):
    """An exponential moving average of the weights (and BatchNorm statistics), validated, checkpointed and
    kept at the end of training in place of the last weights: Lightning's ``EMAWeightAveraging``, which
    also makes ``last.ckpt`` resume both the weights and their average.

    Averaging the weights along the end of training finds a flatter minimum, which in ssm-suite's speech
    measurements generalises better to voices never trained on (benchmarks/README.md, "Averaged weights").
    A recipe asks for it under ``trainer.callbacks``::

        callbacks:
          - class_path: apps.common.training.EMAWeights
            init_args: {decay: 0.999}

    ``decay`` weighs the newest step by ``1 - decay``: about ``1 / (1 - decay)`` steps are averaged.
    Lightning swaps the weights through ``param.data``, which the layers' no-grad kernel caches cannot
    see; every swap here also clears them (:meth:`ssmcore.layers.base.SSMLayer.clear_cache`).
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():  # TaskModule.configure_model only compiles: it shards nothing
            warnings.filterwarnings("ignore", message=".*overrides the configure_model callback")
            super().setup(trainer, pl_module, stage)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        _clear_caches(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        _clear_caches(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        _clear_caches(pl_module)


def _clear_caches(module: torch.nn.Module) -> None:
    for m in module.modules():
        if callable(getattr(m, "clear_cache", None)):
            m.clear_cache()


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


def quiet_lightning_internals() -> None:
    """Silence Lightning's warnings about its own code, which no user of ssm-suite can act on (its use of a
    deprecated torch pytree API); every trainer of ours, the CLI's and :func:`quick_trainer`'s, calls this."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def quick_trainer(run_dir: Path, name: str, accelerator: str = "auto", **options: Any) -> pl.Trainer:
    """A Trainer for a verb that trains many small models in a row (a suite, a study): CSV logs under
    ``run_dir/name``, a transient progress bar, gradient clipping at 1, no checkpoints, no sanity check.

    ``options`` are further :class:`lightning.pytorch.Trainer` arguments (``max_steps``, ``max_epochs``, ...).
    """
    settings: dict[str, Any] = dict(
        accelerator=accelerator, devices=1, logger=CSVLogger(run_dir, name=name), enable_checkpointing=False,
        callbacks=[RichProgressBar(leave=False)], enable_model_summary=False, gradient_clip_val=1.0,
        num_sanity_val_steps=0, log_every_n_steps=10,
    )
    quiet_lightning_internals()
    return pl.Trainer(**{**settings, **options})


def default_loggers(run_dir: Path) -> list:
    """CSV and TensorBoard loggers under ``run_dir``."""
    return [CSVLogger(run_dir, name="csv"), TensorBoardLogger(run_dir, name="tensorboard", default_hp_metric=False)]
