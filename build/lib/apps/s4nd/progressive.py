"""Progressive resizing: train at low resolution first, then at higher ones (S4ND paper, Sec. 5.1).

S4ND kernels are sampled continuous kernels, so the same model trains on 7x7, then 14x14, then
28x28 images with only the rate changing (the backbone derives it from the input size): early
epochs are cheap, and the paper reports 22% faster training for about 1% accuracy.  The model's
``train_resolution`` is the final (rate-1) resolution; earlier stages run at rate > 1, where the
bandlimit also masks the modes that a coarse grid cannot represent.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from apps.common.errors import UserError


class ProgressiveResizing(Callback):
    """Change the training resolution by epoch stages.

    Args:
        schedule: ``{first epoch of the stage: resolution}``, e.g. ``{0: 7, 2: 14, 4: 28}``; it must
            start at epoch 0.  Validation always runs at ``data.eval_resolutions``.

    In a recipe::

        trainer:
          callbacks:
            - class_path: apps.s4nd.progressive.ProgressiveResizing
              init_args: {schedule: {0: 7, 2: 14, 4: 28}}
    """

    def __init__(self, schedule: dict[int, int]) -> None:
        super().__init__()
        stages = {int(k): int(v) for k, v in dict(schedule).items()}
        if 0 not in stages:
            raise UserError(f"ProgressiveResizing schedule must start at epoch 0, got {schedule}")
        if any(epoch < 0 for epoch in stages) or any(r < 1 for r in stages.values()):
            raise UserError(f"ProgressiveResizing schedule needs epochs >= 0 and resolutions >= 1, got {schedule}")
        self.schedule = dict(sorted(stages.items()))

    def resolution_at(self, epoch: int) -> int:
        """The training resolution of ``epoch`` (that of the last stage started at or before it)."""
        return [r for start, r in self.schedule.items() if start <= epoch][-1]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "train_batch_resolution"):
            raise UserError("ProgressiveResizing needs the s4nd ImageClassifier (it sets train_batch_resolution)")
        pl_module.train_batch_resolution = self.resolution_at(trainer.current_epoch)
