"""The Speech Commands classifier as a LightningModule: training, rate-changed evaluation, calibration.

The classifier remembers the sample rate it was trained at (a buffer filled when fitting begins).
When it is validated or tested on data at another ``sample_rate`` it runs every SSM layer with
``rate = train_rate / sample_rate`` (``rate_change: false`` gives the "no rate change" row).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from apps.common.checkpoint import datamodule_options, load_module
from apps.common.distributed import SampleResults
from apps.common.errors import UserError
from apps.common.layers import LayerSpec
from apps.common.norms import reestimate_batchnorm
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.speech.model import SPEECH_LAYER, SpeechNet

SPEECH_OPTIM = OptimConfig(lr=0.01, weight_decay=0.05, ssm_lr=0.001)


class SpeechClassifier(TaskModule):
    """Speech Commands classifier (LightningModule around :class:`SpeechNet`).

    Args:
        num_classes: must equal the data's word count (10 for SC10/SC09, 35 for SC35).
        d_input: 1 for raw audio, ``n_mfcc`` for MFCC input; must match the data.
        train_rate: sample rate the model is trained at (None: the data's rate when fitting starts).
        rate_change: at another test rate, rescale the SSM step (``rate = train_rate / sample_rate``);
            False keeps rate 1 (the "no rate change" baseline).
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
        (backbone options as :class:`SpeechNet`)
    """

    def __init__(self, num_classes: int = 10, d_input: int = 1, d_model: int = 128, n_layers: int = 6,
                 layer: LayerSpec = SPEECH_LAYER, ff_expand: int = 0, norm: str = "batch", prenorm: bool = False,
                 dropout: float = 0.0, pool: list[int] | None = None, pool_mode: str = "mean",
                 train_rate: int | None = None, rate_change: bool = True, pool_expand: int = 1,
                 calibrate_batches: int = 0, optim: OptimConfig = SPEECH_OPTIM, compile: bool = False) -> None:
        super().__init__(optim, default=SPEECH_OPTIM, monitor="val/acc", monitor_mode="max", compile=compile)
        # rate_change is an evaluation switch, not part of the model: left out of the saved hyper-parameters,
        # or LightningCLI would restore the checkpoint's value over ``--model.rate_change false``
        self.save_hyperparameters(ignore=["rate_change"])
        self.net = SpeechNet(d_input=d_input, num_classes=num_classes, d_model=d_model, n_layers=n_layers, layer=layer,
                             ff_expand=ff_expand, norm=norm, prenorm=prenorm, dropout=dropout, pool=pool,
                             pool_mode=pool_mode, pool_expand=pool_expand)
        # filled when fitting starts, saved in the checkpoint: the training rate and input statistics
        self.register_buffer("train_sample_rate", torch.tensor(float(train_rate or 0)))
        self.register_buffer("input_mean", torch.zeros(d_input))
        self.register_buffer("input_std", torch.ones(d_input))
        self.register_buffer("has_input_stats", torch.tensor(False))
        self.rate_change = rate_change
        #: the SSM rate of the current evaluation (1 while training)
        self.rate = 1.0
        #: per-clip evaluation results, gathered over every DDP process at the epoch's end
        self.results = SampleResults()

    # ----------------------------------------------------------------- data checks and rate
    def setup(self, stage: str) -> None:
        datamodule = self._datamodule()
        if datamodule is not None:
            self.check_data(datamodule, fitting=stage == "fit")

    def _datamodule(self) -> Any:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return datamodule if hasattr(datamodule, "num_classes") else None

    def check_data(self, datamodule: Any, fitting: bool = False) -> None:
        """Raise a one-line error unless ``datamodule`` fits the model; when fitting, record its sample
        rate and training statistics in the model (they travel in the checkpoint)."""
        root = getattr(datamodule, "root", "the data")
        if datamodule.num_classes != self.hparams.num_classes:
            raise UserError(f"model.num_classes is {self.hparams.num_classes} but {root} gives {datamodule.num_classes} "
                            f"classes ({len(datamodule.words)} words): set --model.num_classes {datamodule.num_classes}")
        if datamodule.d_input != self.hparams.d_input:
            raise UserError(f"model.d_input is {self.hparams.d_input} but the data gives {datamodule.d_input} "
                            f"features per step: set --model.d_input {datamodule.d_input}")
        if not fitting:
            return
        rate = float(datamodule.sample_rate)
        trained = float(self.train_sample_rate)
        if trained and trained != rate:
            raise UserError(f"model.train_rate is {int(trained)} Hz but data.sample_rate is {int(rate)}: "
                            f"train at the model's rate (other rates are for testing)")
        self.train_sample_rate.fill_(rate)
        if getattr(datamodule.hparams, "normalize", True):
            mean, std = datamodule.normalization()
            self.input_mean.copy_(mean)
            self.input_std.copy_(std)
            self.has_input_stats.fill_(True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A restored checkpoint's input statistics normalise the data from then on (``ssm speech test
        --ckpt_path CKPT --data.root OTHER`` scores OTHER as the model was trained, not with OTHER's own
        training-split statistics, and a folder without a training split can be scored)."""
        state = checkpoint.get("state_dict") or {}
        datamodule = self._datamodule()
        if (datamodule is not None and hasattr(datamodule, "set_normalization") and "input_mean" in state
                and bool(state.get("has_input_stats", False)) and getattr(datamodule.hparams, "normalize", True)):
            datamodule.set_normalization(state["input_mean"], state["input_std"])

    def use_sample_rate(self, sample_rate: float, features: str = "raw") -> float:
        """Evaluate on input at ``sample_rate`` from now on; returns (and sets) the SSM rate.

        MFCC frames come every 10 ms whatever the sample rate, so their sequence rate, and the SSM
        rate, do not change.
        """
        self.rate = self.rate_for(sample_rate) if features == "raw" else 1.0
        return self.rate

    def _eval_start(self) -> None:
        # after the checkpoint is restored, so the recorded training rate is known
        datamodule = self._datamodule()
        if datamodule is not None:
            self.use_sample_rate(float(datamodule.sample_rate), datamodule.hparams.features)

    def on_validation_start(self) -> None:
        self._eval_start()

    def on_validation_epoch_start(self) -> None:
        # after the callbacks' epoch start, so that the weights calibrated are the ones validated (an
        # averaging callback such as apps.common.training.EMAWeights swaps its average in there)
        datamodule = self._datamodule()
        if self.hparams.calibrate_batches > 0 and self.trainer.state.fn == "fit" and datamodule is not None:
            self.calibrate_norms(datamodule.train_dataloader(), self.hparams.calibrate_batches)

    @torch.no_grad()
    def calibrate_norms(self, loader: Any, batches: int) -> None:
        """Re-estimate every BatchNorm's running statistics from ``batches`` training batches at rate 1.

        The running averages kept while training lag a fast-moving model (at a high learning rate the
        evaluation-mode network can fall to chance while its batch-statistics mode is accurate); an
        exact average over fresh batches ("precise BatchNorm") makes evaluation match training.
        """
        reestimate_batchnorm(self.net, itertools.islice(loader, batches), lambda x: self.net(x, rate=1.0),
                             only_norms=False)

    def on_test_start(self) -> None:
        self._eval_start()

    def on_predict_start(self) -> None:
        self._eval_start()

    def rate_for(self, sample_rate: float) -> float:
        """The SSM rate for input at ``sample_rate``: ``train_rate / sample_rate`` (1 without rate change)."""
        trained = float(self.train_sample_rate) or sample_rate
        return trained / sample_rate if self.rate_change else 1.0

    # ----------------------------------------------------------------- model
    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, L, d_input) -> logits (B, num_classes) at the current rate."""
        return self.net(x, rate=self.rate)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, d_model) for FID."""
        return self.net.features(x, rate=self.rate)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.net(x, rate=1.0)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.log("train/acc", (logits.argmax(-1) == y).float().mean(), batch_size=len(y))
        return loss

    def _eval(self, batch) -> None:
        x, y = batch
        logits = self(x)
        self.results.add(loss=F.cross_entropy(logits.float(), y, reduction="none"), correct=logits.argmax(-1) == y)

    def _eval_end(self, stage: str) -> None:
        # over every clip of the split once, whatever the number of processes (apps.common.distributed)
        rows = self.results.gather(self.trainer, stage)
        if rows:
            self.log(f"{stage}/loss", float(rows["loss"].double().mean()), sync_dist=True)
            self.log(f"{stage}/acc", float(rows["correct"].double().mean()), prog_bar=True, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
        self.log("test/rate", self.rate, sync_dist=True)

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(-1)

    def on_train_start(self) -> None:
        self.rate = 1.0


def load_speech_classifier(path: str | Path) -> tuple[SpeechClassifier, dict[str, Any]]:
    """The classifier of a fit checkpoint (eval mode, CPU) and the data options saved with it.

    Raises:
        UserError: the file is missing or unreadable, is not a Lightning checkpoint, or holds another model.
    """
    if not Path(path).exists():  # a .ckpt file or a save_pretrained folder
        raise UserError(f"checkpoint not found: {path} (train one with `ssm speech fit -c recipes/speech/<recipe>.yaml`)")

    def check(blob: dict[str, Any]) -> str | None:
        keys = blob["state_dict"]
        return None if "net.head.weight" in keys and "train_sample_rate" in keys else "no classifier head in its state"

    model, blob = load_module(path, SpeechClassifier, check=check, kind="a Speech Commands classifier (SpeechClassifier)")
    return model, datamodule_options(blob)
