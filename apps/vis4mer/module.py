"""LightningModule for long-video classification / regression with ViS4mer (Islam & Bertasius 2022).

Training sees one span per item.  Evaluation scores every span of a video and aggregates per
video, as the paper does: the softmax of all spans is summed (classification) or the
predictions averaged (regression) before the video-level accuracy / MSE is computed.
Regression targets are standardised by the training split's mean and std; the logged MSE is
in the original units, beside ``mse_mean``, the MSE of always predicting the training mean.
Under DDP every process's span results are gathered (:mod:`apps.common.distributed`) before the
per-video aggregation, so a video whose spans the sampler spread over processes is scored whole, once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from apps.common.distributed import SampleResults
from apps.common.errors import UserError
from apps.common.layers import LayerSpec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.vis4mer.data import task_outputs
from apps.vis4mer.model import VIS4MER_LAYER, MeanPoolBaseline, ViS4merDecoder

VIS4MER_OPTIM = OptimConfig(lr=1e-3, weight_decay=0.01, ssm_lr=1e-3)

DECODERS = ("vis4mer", "meanpool")


def aggregate_per_video(video: Tensor, scores: Tensor, targets: Tensor, regression: bool) -> tuple[Tensor, Tensor]:
    """Per-video predictions from per-span scores.

    Args:
        video: (S,) video index of each span.
        scores: (S, C) logits (classification) or (S,) predictions (regression).
        targets: (S,) the video's target, repeated on each of its spans.
    Returns:
        ``(prediction, target)`` per video, in order of first appearance: the argmax of the summed
        softmax (V,) long, or the mean prediction (V,); and each video's target (V,).
    """
    ids, inverse = torch.unique(video, return_inverse=True)
    order = torch.full((len(ids),), len(video), dtype=torch.long)
    order = order.scatter_reduce(0, inverse, torch.arange(len(video)), reduce="amin")
    first = order.argsort()
    target = torch.zeros(len(ids), dtype=targets.dtype).index_copy(0, inverse, targets)
    if regression:
        total = torch.zeros(len(ids), dtype=scores.dtype).index_add(0, inverse, scores)
        count = torch.zeros(len(ids), dtype=scores.dtype).index_add(0, inverse, torch.ones_like(scores))
        return (total / count)[first], target[first]
    probs = torch.zeros(len(ids), scores.shape[-1], dtype=scores.dtype).index_add(0, inverse, scores.softmax(-1))
    return probs.argmax(-1)[first], target[first]


class VideoClassifier(TaskModule):
    """ViS4mer decoder (or the mean-pooled baseline) over cached frame tokens.

    Args:
        dataset, task: linked from ``data``; fix the output size and classification vs regression.
        d_input: channels of the cached tokens (the backbone's: 768 ViT-B, 1024 ViT-L, 3 p^2 linear).
        decoder: ``vis4mer`` (:class:`apps.vis4mer.model.ViS4merDecoder`) or ``meanpool``.
        d_model, n_stages, dropout, mixer: decoder options.
        layer: the SSM layer spec (``{name: s4, d_state: 64}`` by default).
        label_smoothing: cross-entropy label smoothing.
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
    """

    def __init__(self, dataset: str = "lvu", task: str = "first_digit", d_input: int = 1024,
                 decoder: str = "vis4mer", d_model: int = 1024, n_stages: int = 3,
                 layer: LayerSpec = VIS4MER_LAYER, dropout: float = 0.1, mixer: str = "ssm",
                 label_smoothing: float = 0.0, optim: OptimConfig = VIS4MER_OPTIM, compile: bool = False) -> None:
        self.regression, outputs = task_outputs(dataset, task)
        super().__init__(optim, default=VIS4MER_OPTIM, monitor="val/mse" if self.regression else "val/acc",
                         monitor_mode="min" if self.regression else "max", compile=compile)
        if decoder not in DECODERS:
            raise ValueError(f"model.decoder: unknown {decoder!r}; choose one of {', '.join(DECODERS)}")
        self.save_hyperparameters()
        if decoder == "vis4mer":
            self.net: torch.nn.Module = ViS4merDecoder(d_input=d_input, num_outputs=outputs, d_model=d_model,
                                                       n_stages=n_stages, layer=layer, dropout=dropout, mixer=mixer)
        else:
            self.net = MeanPoolBaseline(d_input=d_input, num_outputs=outputs, d_model=d_model, dropout=dropout)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        #: per-span evaluation results, gathered over every DDP process at the epoch's end
        self.results = SampleResults()

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "feature_info"):
            return
        datamodule.setup(stage)
        _, dim, _ = datamodule.feature_info()
        if dim != self.hparams.d_input:
            raise UserError(f"model.d_input is {self.hparams.d_input} but the features in {datamodule.cache} have "
                            f"{dim} channels: set --model.d_input {dim}")
        if self.regression and stage == "fit":
            self.target_mean.fill_(datamodule.target_mean)
            self.target_std.fill_(datamodule.target_std)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` (B, L, d_input) -> logits (B, classes) or predictions (B,) in target units."""
        out = self.net(tokens)
        return out[:, 0] * self.target_std + self.target_mean if self.regression else out

    def loss(self, out: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        """The training loss (standardised MSE or cross-entropy); ``reduction="none"``: one per span (B,)."""
        if self.regression:
            return F.mse_loss((out - self.target_mean) / self.target_std, (target - self.target_mean) / self.target_std,
                              reduction=reduction)
        return F.cross_entropy(out, target.long(), label_smoothing=self.hparams.label_smoothing, reduction=reduction)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        tokens, target, _ = batch
        out = self(tokens)
        loss = self.loss(out, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        if not self.regression:
            self.log("train/acc", (out.argmax(-1) == target.long()).float().mean(), batch_size=len(target))
        return loss

    def _eval_step(self, batch) -> None:
        tokens, target, video = batch
        out = self(tokens)
        self.results.add(video=video, scores=out.float(), target=target, loss=self.loss(out, target, "none").float())

    def _eval_end(self, stage: str) -> None:
        # every span of the split once, from every process, before grouping spans into videos
        rows = self.results.gather(self.trainer, stage)
        if not rows:
            return
        pred, target = aggregate_per_video(rows["video"], rows["scores"], rows["target"], self.regression)
        self.log(f"{stage}/loss", float(rows["loss"].double().mean()), sync_dist=True)
        self.log(f"{stage}/videos", float(len(pred)), sync_dist=True)
        if self.regression:
            self.log(f"{stage}/mse", float(F.mse_loss(pred.double(), target.double())), prog_bar=True, sync_dist=True)
            self.log(f"{stage}/mse_mean", float(F.mse_loss(torch.full_like(target, float(self.target_mean)).double(),
                                                           target.double())), sync_dist=True)
        else:
            self.log(f"{stage}/acc", float((pred == target.long()).double().mean()), prog_bar=True, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch, batch_idx: int) -> dict:
        tokens, target, video = batch
        out = self(tokens)
        return {"video": video, "prediction": out if self.regression else out.softmax(-1), "target": target}
