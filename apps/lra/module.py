"""The LRA LightningModule: one task's model, loss and exact accuracy across processes.

Accuracy is counted, never averaged: every evaluation step records, per sample, its number of correct
predictions and of predictions (and, for PathfinderSegmentation, the intersection and union of the
joining-path class); at the end of the epoch the rows of every process are gathered, each sample once
(:mod:`apps.common.distributed`: the sampler's padding duplicates are dropped), added, then divided once.  ``{stage}/acc`` is sequence accuracy, token accuracy over the labelled positions
(ListOpsSubTrees: the closing brackets) or pixel accuracy (PathfinderSegmentation, which also logs
``{stage}/iou`` of the joining-path class, DLR's class 2).  ``ssm lra test`` writes the figures to ``test_metrics.json``
in the run folder, which ``ssm lra table`` collects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from apps.common.distributed import SampleResults
from apps.common.io import atomic_write_text
from apps.common.layers import LayerSpec, layer_spec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.lra.model import (
    RetrievalClassifier,
    SequenceClassifier,
    TokenClassifier,
    layer_is_maskable,
    token_loss,
)
from apps.lra.tasks import task_info, vocab_size

#: the default layer and optimiser (S4's LRA settings: lr 0.01 / SSM lr 0.001, weight decay 0.05 off the SSM)
LRA_LAYER: LayerSpec = {"name": "s4d", "d_state": 64, "bidirectional": True}
LRA_OPTIM = OptimConfig(lr=0.01, weight_decay=0.05, ssm_lr=0.001, scheduler="cosine")
#: the file ``ssm lra test`` writes into the run folder
TEST_METRICS = "test_metrics.json"


class LRAModule(TaskModule):
    """One LRA task with any ssmcore layer.  Logs ``{stage}/loss`` and ``{stage}/acc`` (monitored, max).

    Args:
        task: the task (linked from ``data.task``), which sets the input encoder and the head.
        d_model, n_layers: encoder width and depth.
        layer: the SSM layer spec (``{name: s4d, d_state: 64, bidirectional: true, ...}``; any registry layer).
        ff_expand: feed-forward expansion after each SSM block (0: none, as in S4's LRA configs).
        norm: ``layer`` or ``batch`` (or ``none``); prenorm: pre-norm (True) or post-norm blocks.
        pooling: ``mean`` or ``last`` over the valid positions (sequence and retrieval tasks).
        dropout: residual dropout (and the layers', unless the spec sets its own).
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).
        compile: ``torch.compile`` the network (``--model.compile true``; see :class:`TaskModule`).
    """

    def __init__(
        self,
        task: str = "listops",
        d_model: int = 128,
        n_layers: int = 4,
        layer: LayerSpec = LRA_LAYER,
        ff_expand: int = 0,
        norm: str = "batch",
        prenorm: bool = False,
        pooling: str = "mean",
        dropout: float = 0.0,
        optim: OptimConfig = LRA_OPTIM,
        compile: bool = False,
    ) -> None:
        super().__init__(optim, default=LRA_OPTIM, monitor="val/acc", monitor_mode="max", compile=compile)
        self.save_hyperparameters()
        self.info = task_info(task)
        spec = layer_spec(layer)
        maskable, why = layer_is_maskable(spec)
        if not maskable and self.info.input != "pixels":  # token tasks pad sequences of different lengths
            raise ValueError(f"model.layer: {spec['name']!r} cannot take the padded batches of {task}: {why}; "
                             "choose another layer (or a causal one)")
        encoder = dict(d_model=d_model, n_layers=n_layers, layer=spec, vocab_size=vocab_size(task),
                       ff_expand=ff_expand, norm=norm, prenorm=prenorm, dropout=dropout)
        if self.info.output == "pair":
            self.net: torch.nn.Module = RetrievalClassifier(self.info.n_classes, pooling=pooling, **encoder)
        elif self.info.output == "token":
            self.net = TokenClassifier(self.info.n_classes, **encoder)
        else:
            self.net = SequenceClassifier(self.info.n_classes, pooling=pooling, **encoder)
        #: per-sample counts of each evaluation stage, gathered over every DDP process at the epoch's end
        self._results: dict[str, SampleResults] = {}
        self.written_paths: list[Path] = []
        self._test_started = 0.0

    @staticmethod
    def _inputs(x: Tensor) -> Tensor:
        """Pixels (uint8) become floats in [-1, 1]; token ids pass through."""
        if x.dtype == torch.uint8:
            return x.float().div(127.5).sub(1.0)
        return x

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits of a batch: (B, n_classes), or (B, L, n_classes) for the token-level tasks."""
        if self.info.output == "pair":
            return self.net(batch["x"], batch.get("lengths"), batch["x2"], batch.get("lengths2"))
        return self.net(self._inputs(batch["x"]), batch.get("lengths"))

    def _shared(self, batch: Mapping[str, Tensor], stage: str) -> Tensor:
        logits, y = self(batch), batch["y"]
        n = int(y.shape[0])
        pred = logits.detach().argmax(-1)
        labelled = y != -100
        correct = (pred == y) & labelled
        if stage == "train":
            loss = token_loss(logits, y) if self.info.output == "token" else F.cross_entropy(logits, y)
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            self.log("train/acc", correct.sum() / labelled.sum().clamp_min(1), prog_bar=True, batch_size=n)
            return loss

        def per_sample(t: Tensor) -> Tensor:
            return t.reshape(len(t), -1).sum(1) if t.dim() > 1 else t.long()

        flat = logits.detach().float().reshape(-1, logits.shape[-1])  # the loss per sample: its labelled entries' sum
        entry_loss = F.cross_entropy(flat, y.reshape(-1), ignore_index=-100, reduction="none").reshape(y.shape)
        rows = {"correct": per_sample(correct), "labelled": per_sample(labelled),
                "loss": entry_loss.reshape(n, -1).sum(1).double()}
        if self.hparams.task == "pathfinder_segmentation":  # IoU of the joining path, the highest class
            path = self.info.n_classes - 1
            path_pred, path_true = (pred == path) & labelled, (y == path) & labelled
            rows |= {"inter": per_sample(path_pred & path_true), "union": per_sample(path_pred | path_true)}
        self._results.setdefault(stage, SampleResults()).add(**rows)
        return entry_loss.sum() / labelled.sum().clamp_min(1)  # the batch's mean loss, from the same entries

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """The stage's exact metrics over every sample once (every DDP process, the sampler's padding dropped):
        loss (per labelled entry), accuracy (and IoU) from summed counts; resets them."""
        results = self._results.get(stage)
        trainer = self._trainer  # None outside a Trainer (``self.trainer`` raises there)
        if results is None or (trainer is None and not len(results)):
            return {}
        rows = results.take() if trainer is None else results.gather(trainer, stage)
        if not rows:
            return {}
        names = ["correct", "labelled"] + (["inter", "union"] if "inter" in rows else [])
        values = [float(rows[k].double().sum()) for k in names]
        loss = float(rows["loss"].sum()) / max(values[1], 1.0)
        metrics = {f"{stage}/loss": loss, f"{stage}/acc": values[0] / max(values[1], 1.0), f"{stage}/count": values[1]}
        if len(values) == 4:
            metrics[f"{stage}/iou"] = values[2] / max(values[3], 1.0)
        return metrics

    def _log_epoch(self, stage: str) -> dict[str, float]:
        metrics = self.epoch_metrics(stage)
        for key, value in metrics.items():
            if not key.endswith("/count"):
                self.log(key, value, prog_bar=True, sync_dist=True)  # already global and equal on every process
        return metrics

    def training_step(self, batch, batch_idx):
        return self._shared(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._test_started = time.perf_counter()

    def on_test_epoch_end(self) -> None:
        metrics = self._log_epoch("test")
        if not metrics or self.trainer is None or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        spec = layer_spec(self.hparams.layer)
        data = self.trainer.datamodule
        record: dict[str, Any] = {
            "task": self.hparams.task,
            "size": getattr(data, "size", None) if self.hparams.task.startswith("pathfinder") else None,
            "layer": spec["name"],
            "bidirectional": bool(spec.get("bidirectional", False)),
            "layer_spec": spec,
            "d_model": self.hparams.d_model,
            "n_layers": self.hparams.n_layers,
            "parameters": sum(p.numel() for p in self.parameters()),
            "ckpt_path": str(self.trainer.ckpt_path) if self.trainer.ckpt_path else None,
            "test_seconds": round(time.perf_counter() - self._test_started, 3),
            "metrics": {k: v for k, v in metrics.items()},
        }
        path = Path(self.trainer.default_root_dir) / TEST_METRICS
        atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
        self.written_paths.append(path)

    def predict_step(self, batch, batch_idx):
        return self(batch).argmax(-1)
