"""LightningModule for resolution-agnostic image classification (S4ND, Nguyen, Goel, Gu et al. 2022).

Batches arrive at their stored size and are resized here (antialiased bilinear): training batches
to the current training resolution (the recipe's ``data.resolution``, or the stage of a
:class:`apps.s4nd.progressive.ProgressiveResizing` callback), evaluation batches to every
resolution of ``data.eval_resolutions``.  Each is logged as its own metric (``val/acc@14``,
``val/acc@28``, ...); ``val/acc`` is the accuracy at the training resolution and picks the best
checkpoint.  The backbone derives the S4ND rate from the input size, so nothing else changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from apps.common.distributed import SampleResults
from apps.common.errors import UserError
from apps.common.layers import LayerSpec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.s4nd.data import resize_images
from apps.s4nd.model import S4ND_LAYER, ConvNeXtNet, IsotropicNet, mixer_spec

BACKBONES = ("isotropic", "convnext")
S4ND_OPTIM = OptimConfig(lr=3e-3, weight_decay=0.05, ssm_lr=1e-3)
#: the mixer options the module took one by one before the mixer became one ``layer`` spec
LEGACY_MIXER_KEYS = ("mixer", "d_state", "bandlimit", "dt_min", "dt_max", "align_rate", "conv_kernel")


class ImageClassifier(TaskModule):
    """S4ND (or Conv2D-baseline) image classifier trained at one resolution, evaluated at several.

    Args:
        backbone: ``isotropic`` (:class:`apps.s4nd.model.IsotropicNet`) or ``convnext``
            (:class:`apps.s4nd.model.ConvNeXtNet`).
        layer: the mixer, one spec: ``{name: s4nd, d_state: 32, bandlimit: 0.5, dt_min: 0.01, dt_max: 0.1}``
            (``bandlimit: null`` turns it off; ``align_rate: true`` keeps S4ND's half-step kernel offset of the
            training grid at other resolutions, experimental: on MNIST-5k 14 -> 28 it gained 2.2 points on one
            model, lost 0.6 on another), or ``{name: conv2d, d_state: 16}``, the baseline of matched size and
            depth (``kernel_size`` instead of the matched one).
        in_channels: image channels (linked from ``data.channels``).
        num_classes: classes; must match the data.
        train_resolution: the resolution rate 1 refers to (linked from ``data.resolution``).
        eval_resolutions: resolutions evaluated at validation/test (linked from ``data.eval_resolutions``).
        d_model, n_layers: isotropic width and depth.  depths, dims: ConvNeXt stages.
        stem, patch_size: ``pixel`` or ``patch`` (see :class:`apps.s4nd.model.Stem`).
        ff_expand: feed-forward expansion (None: 2 isotropic, 4 ConvNeXt).
        dropout: dropout.
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
    """

    def __init__(
        self,
        backbone: str = "isotropic",
        layer: LayerSpec = S4ND_LAYER,
        in_channels: int = 1,
        num_classes: int = 10,
        train_resolution: int = 28,
        eval_resolutions: list[int] | None = None,
        d_model: int = 64,
        n_layers: int = 4,
        depths: Sequence[int] = (2, 2),
        dims: Sequence[int] = (32, 64),
        stem: str = "pixel",
        patch_size: int = 2,
        ff_expand: int | None = None,
        dropout: float = 0.0,
        optim: OptimConfig = S4ND_OPTIM, compile: bool = False,
    ) -> None:
        super().__init__(optim, default=S4ND_OPTIM, monitor="val/acc", monitor_mode="max", compile=compile)
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone: unknown {backbone!r}; choose one of {', '.join(BACKBONES)}")
        if train_resolution < 1 or any(r < 1 for r in eval_resolutions or []):  # linked from data.*: say both
            raise ValueError(f"data.resolution (model.train_resolution) and data.eval_resolutions must be positive, "
                             f"got {train_resolution} and {eval_resolutions}")
        self.save_hyperparameters()
        common = dict(in_channels=in_channels, num_classes=num_classes, train_resolution=train_resolution,
                      layer=mixer_spec(layer), stem=stem, patch_size=patch_size, dropout=dropout)
        if backbone == "isotropic":
            self.net: IsotropicNet | ConvNeXtNet = IsotropicNet(
                d_model=d_model, n_layers=n_layers, ff_expand=2 if ff_expand is None else ff_expand, **common)
        else:
            self.net = ConvNeXtNet(depths=depths, dims=dims, ff_expand=4 if ff_expand is None else ff_expand, **common)
        self.eval_resolutions = sorted(set(eval_resolutions or []) | {train_resolution})
        #: resolution of the training batches; a ProgressiveResizing callback changes it by epoch
        self.train_batch_resolution = train_resolution
        self._train_seconds = 0.0
        #: per-image evaluation results, gathered over every DDP process at the epoch's end
        self.results = SampleResults()

    @staticmethod
    def legacy_hparams(hparams: dict) -> dict:
        """Older checkpoints' mixer options (``mixer``, ``d_state``, ``bandlimit``, ...) as one ``layer`` spec."""
        if "layer" in hparams or not any(k in hparams for k in LEGACY_MIXER_KEYS):
            return hparams
        out = {k: v for k, v in hparams.items() if k not in LEGACY_MIXER_KEYS}
        old = {k: hparams[k] for k in LEGACY_MIXER_KEYS if k in hparams}
        name = old.pop("mixer", "s4nd")
        if name == "conv2d":
            out["layer"] = {"name": name, "d_state": old.get("d_state", 32), "kernel_size": old.get("conv_kernel")}
        else:
            old.pop("conv_kernel", None)
            out["layer"] = {"name": name, **old}
        return out

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "num_classes"):
            return
        datamodule.setup(stage)
        if datamodule.num_classes != self.hparams.num_classes:
            raise UserError(f"model.num_classes is {self.hparams.num_classes} but {datamodule.hparams.root} has "
                            f"{datamodule.num_classes} classes: set --model.num_classes {datamodule.num_classes}")

    def forward(self, images: Tensor, resolution: int | None = None) -> Tensor:
        """``images`` (B, H, W, C) -> logits (B, classes), resized to ``resolution`` first if given."""
        return self.net(images if resolution is None else resize_images(images, resolution))

    def evaluate(self, images: Tensor, labels: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
        """``(loss, accuracy)`` of a batch at ``resolution``."""
        logits = self(images, resolution)
        return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()

    # ----------------------------------------------------------------- training
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._train_seconds += time.perf_counter() - self._batch_started

    def on_train_epoch_start(self) -> None:
        self._train_seconds = 0.0

    def on_train_epoch_end(self) -> None:
        # compute time of the training steps alone (no validation, no data loading)
        self.log("train/epoch_time_s", self._train_seconds)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels = batch
        loss, acc = self.evaluate(images, labels, self.train_batch_resolution)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", acc, batch_size=len(labels))
        self.log("train/resolution", float(self.train_batch_resolution), batch_size=len(labels))
        return loss

    def _eval_step(self, batch) -> None:
        images, labels = batch
        losses, correct = [], []
        for resolution in self.eval_resolutions:
            logits = self(images, resolution)
            losses.append(F.cross_entropy(logits.float(), labels, reduction="none"))
            correct.append(logits.argmax(-1) == labels)
        self.results.add(loss=torch.stack(losses, 1), correct=torch.stack(correct, 1))  # (B, resolutions)

    def _eval_end(self, stage: str) -> None:
        # over every image of the split once, whatever the number of processes (apps.common.distributed)
        rows = self.results.gather(self.trainer, stage)
        if not rows:
            return
        loss, acc = rows["loss"].double().mean(0), rows["correct"].double().mean(0)  # (resolutions,)
        for i, resolution in enumerate(self.eval_resolutions):
            self.log(f"{stage}/acc@{resolution}", float(acc[i]), sync_dist=True)
            self.log(f"{stage}/loss@{resolution}", float(loss[i]), sync_dist=True)
            if resolution == self.hparams.train_resolution:
                self.log(f"{stage}/acc", float(acc[i]), prog_bar=True, sync_dist=True)
                self.log(f"{stage}/loss", float(loss[i]), sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        return self(batch[0], self.hparams.train_resolution).argmax(-1)
