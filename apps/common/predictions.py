"""``ssm <app> predict``: the predictions are written to the run folder, never over earlier ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from apps.common.io import atomic_torch_save


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_cpu(v) for v in value]
    return value


def next_free_file(path: Path) -> Path:
    """``path`` if it does not exist, else the first ``<stem>-vN<suffix>`` (N >= 2) that does not."""
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-v{n}{path.suffix}")
        n += 1
    return candidate


class PredictionWriter(BasePredictionWriter):
    """Writes every ``predict_step`` output, in batch order, to ``<run>/predictions.pt`` (then ``-v2``, ...).

    The file holds ``{"batches": [output of each batch]}`` with tensors on the CPU; it loads with
    ``torch.load(path, weights_only=True)``.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__(write_interval="epoch")
        self.run_dir = Path(run_dir)
        self.written: list[Path] = []

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        if not trainer.is_global_zero:
            return
        path = next_free_file(self.run_dir / "predictions.pt")
        atomic_torch_save({"batches": _to_cpu(list(predictions))}, path)
        self.written.append(path)


def has_predict_step(module: pl.LightningModule) -> bool:
    """Whether the app's LightningModule defines its own ``predict_step``."""
    return type(module).predict_step is not pl.LightningModule.predict_step
