"""The DLR synthetic tasks as a LightningDataModule: fresh training samples every epoch.

Training batches are generated on the fly from ``(seed, epoch, batch index)``, so every epoch
sees new sequences and a resumed run regenerates exactly the batches it would have seen.
Validation and test sets are fixed (seeds ``seed + 10**6`` and ``seed + 2 * 10**6``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from apps.synthetic.tasks import TASKS, generate, task_dims

VAL_OFFSET, TEST_OFFSET = 10**6, 2 * 10**6


class TaskBatches(IterableDataset):
    """An epoch of ``steps`` freshly generated batches ``(x (B, L_in, d_in), y (B, L_out, d_out))``.

    Batch ``i`` of epoch ``e`` uses the generator seed ``seed + 1000003 * e + i``; ``epoch()``
    says which epoch is running (the trainer's), so the samples change every epoch.
    """

    def __init__(
        self,
        make: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
        batch_size: int,
        steps: int,
        seed: int,
        epoch: Callable[[], int],
    ) -> None:
        super().__init__()
        self.make, self.batch_size, self.steps, self.seed, self.epoch = make, batch_size, steps, seed, epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        e = self.epoch()
        for i in range(self.steps):
            yield self.make(self.batch_size, torch.Generator().manual_seed(self.seed + 1000003 * e + i))


class SyntheticData(pl.LightningDataModule):
    """One DLR atomic task (see :mod:`apps.synthetic.tasks`).

    Args:
        task: one of ``shift, cumsum, cummax, reverse, sort, masked_select, masked_select_fixed,
            context_shift, solve, solve_fixed, mips``.
        length: the task's length L (input steps are L, 2L for reverse/sort, L + n_select for
            masked_select, N^2 + 2N <= L for solve).
        num_shifts: output channels of ``shift``.
        n_select: marked positions of ``masked_select``.
        mips_dim: vector size D of ``mips``.
        batch_size: sequences per batch.
        steps_per_epoch: training batches per epoch (all freshly generated).
        val_size, test_size: fixed evaluation sequences.
        seed: base seed of all generation.
    """

    def __init__(
        self,
        task: str = "shift",
        length: int = 512,
        num_shifts: int = 8,
        n_select: int = 32,
        mips_dim: int = 4,
        batch_size: int = 32,
        steps_per_epoch: int = 100,
        val_size: int = 256,
        test_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"data.task: unknown {task!r}; choose one of {', '.join(TASKS)}")
        if length < 2 or batch_size < 1 or steps_per_epoch < 1:
            raise ValueError(
                f"data.length >= 2, data.batch_size >= 1 and data.steps_per_epoch >= 1 needed, got "
                f"{length}, {batch_size}, {steps_per_epoch}"
            )
        self.save_hyperparameters()
        self.make(1, torch.Generator().manual_seed(0))  # validates the task options now
        self.d_input, self.d_output = task_dims(task, num_shifts, mips_dim)
        self._counter = 0

    def make(self, batch: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """One batch of this task: ``(x (batch, L_in, d_in), y (batch, L_out, d_out))``."""
        h = self.hparams
        return generate(h.task, batch, h.length, g, h.num_shifts, h.n_select, h.mips_dim)

    def current_epoch(self) -> int:
        """The trainer's epoch, or a count of training passes without a trainer."""
        if self.trainer is not None:
            return int(self.trainer.current_epoch)
        self._counter += 1
        return self._counter - 1

    def _fixed(self, size: int, offset: int) -> TensorDataset:
        g = torch.Generator().manual_seed(self.hparams.seed + offset)
        xs, ys, left = [], [], size
        while left > 0:  # in chunks, so that MIPS's (B, L, L) scores stay small
            x, y = self.make(min(left, 64), g)
            xs.append(x)
            ys.append(y)
            left -= x.shape[0]
        return TensorDataset(torch.cat(xs), torch.cat(ys))

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        self.train_set = TaskBatches(self.make, h.batch_size, h.steps_per_epoch, h.seed, self.current_epoch)
        if stage in (None, "fit", "validate") and not hasattr(self, "val_set"):
            self.val_set = self._fixed(h.val_size, VAL_OFFSET)
        if stage in (None, "test", "predict") and not hasattr(self, "test_set"):
            self.test_set = self._fixed(h.test_size, TEST_OFFSET)

    def train_dataloader(self) -> DataLoader:
        # Lightning warns that an IterableDataset's __len__ can be wrong with several loader workers; this loader has
        # none (each batch is generated in the main process from its seed), so the length is exact
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
        return DataLoader(self.train_set, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
