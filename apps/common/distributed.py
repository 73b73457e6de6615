"""Evaluation metrics that stay right under data parallelism (``--trainer.strategy ddp``).

With several processes, Lightning gives each one a :class:`torch.utils.data.DistributedSampler`:
process ``r`` of ``W`` sees the samples ``r, r + W, r + 2W, ...`` and, when the set does not divide
evenly, the first samples again as padding so that every process runs as many batches.  Per-process
means reduced with a mean are then wrong twice: the padding duplicates count twice, and anything
computed over groups of samples (one video's spans, R^2 over the set) sees only a part of each group.

The fix used by every app: record one row of results per sample (a correctness flag, a loss sum and
its count, a span's logits, ...), gather the rows of every process, drop the padding duplicates by
dataset index, and compute the metric from the whole set, identically on every process::

    from apps.common.distributed import SampleResults

    class MyModule(LightningModule):
        def __init__(self):
            ...
            self.results = SampleResults()

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.results.add(correct=logits.argmax(-1) == y,
                             loss=F.cross_entropy(logits, y, reduction="none"))

        def on_validation_epoch_end(self):
            rows = self.results.gather(self.trainer, "val")   # every sample once, sorted by index
            self.log("val/acc", rows["correct"].float().mean(), sync_dist=True)
            self.log("val/loss", rows["loss"].mean(), sync_dist=True)

The logged values are already global and equal on every process; ``sync_dist=True`` only tells Lightning so
(its mean of equal values changes nothing, and without it Lightning warns on every epoch).  Rows are added
in the order the process's dataloader yields its samples; :meth:`SampleResults.gather` reads that order
from the dataloader's sampler, so the datasets need not return their index.  A step whose randomness
must not depend on how samples fall into batches or processes can seed itself per sample with
:meth:`SampleResults.next_indices`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

#: trainer attribute holding the dataloaders of each evaluation stage
_STAGE_LOADERS = {"val": "val_dataloaders", "validate": "val_dataloaders", "test": "test_dataloaders",
                  "predict": "predict_dataloaders"}


def distributed() -> bool:
    """True when a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def dataloader_order(dataloader: DataLoader) -> Tensor:
    """The dataset indices this process's ``dataloader`` yields, in order (N,) long.

    Read from the batch sampler (or sampler) that Lightning put in place: under DDP, the process's share
    of a :class:`~torch.utils.data.DistributedSampler`, padding duplicates included; in one process, every
    index once.  Evaluation samplers do not shuffle (and a shuffling one repeats its order within an
    epoch), so the order is the one the evaluation loop saw.

    Raises:
        TypeError: the dataloader reads an iterable dataset, which has no sample indices.
    """
    if isinstance(dataloader.dataset, IterableDataset):
        raise TypeError("per-sample results need a map-style dataset; an IterableDataset has no sample indices")
    if dataloader.batch_sampler is not None:
        order = [int(i) for batch in dataloader.batch_sampler for i in batch]
    else:
        order = [int(i) for i in dataloader.sampler]
    return torch.tensor(order, dtype=torch.long)


def stage_dataloader(trainer: Any, stage: str, dataloader_idx: int = 0) -> DataLoader:
    """The dataloader of ``stage`` (``val``, ``test`` or ``predict``) that ``trainer`` is running."""
    loaders = getattr(trainer, _STAGE_LOADERS[stage])
    if isinstance(loaders, (list, tuple)):
        return loaders[dataloader_idx]
    if isinstance(loaders, Mapping):
        return list(loaders.values())[dataloader_idx]
    if loaders is None:
        raise RuntimeError(f"the trainer runs no {stage} dataloader")
    return loaders


def gather_samples(index: Tensor, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Every process's per-sample rows, each sample once, sorted by dataset index; the same on every process.

    Args:
        index: (N_r,) dataset index of each row on this process (N_r may differ between processes).
        values: name -> (N_r, ...) tensor of per-sample results (any dtype; trailing shapes equal on
            every process).
    Returns:
        ``{"index": (N,), name: (N, ...), ...}`` on CPU, where N is the number of distinct indices over all
        processes.  Rows of a repeated index (the sampler's padding) are dropped but for the first one in
        process order; such rows hold the same sample, so they hold the same results.  ``{}`` when no
        process has any row.

    Without a process group (or with one process) this only sorts and de-duplicates the local rows.  With
    one, it is a collective: every process must call it, in the same order.  The rows travel as pickled
    CPU tensors (``torch.distributed.all_gather_object``), so uneven lengths need no padding; per-sample
    results are small.
    """
    index = index.detach().cpu().long().reshape(-1)
    local = {k: v.detach().cpu() for k, v in values.items()}
    for name, value in local.items():
        if value.shape[:1] != index.shape:
            raise ValueError(f"gather_samples: {name!r} has {tuple(value.shape)} rows but there are "
                             f"{len(index)} indices")
    if distributed():
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (index, local))
        parts = [p for p in parts if p[1]]  # a process that added nothing sends no names
        if not parts:
            return {}
        index = torch.cat([p[0] for p in parts])
        local = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
    elif not local:
        return {}
    order = torch.argsort(index, stable=True)  # first occurrence first among equal indices
    sorted_index = index[order]
    keep = torch.ones_like(sorted_index, dtype=torch.bool)
    keep[1:] = sorted_index[1:] != sorted_index[:-1]
    rows = order[keep]
    return {"index": index[rows], **{k: v[rows] for k, v in local.items()}}


class SampleResults:
    """Per-sample results of one evaluation epoch, gathered over every process without duplicates.

    Call :meth:`add` in each ``validation_step`` / ``test_step`` with one row per sample of the batch, in
    batch order, and :meth:`gather` once in ``on_validation_epoch_end`` / ``on_test_epoch_end`` (on every
    process: it is a collective).  See the module docstring for an example.
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[Tensor]] = {}
        self._count = 0
        self._order: Tensor | None = None

    def __len__(self) -> int:
        """Samples added on this process since the last :meth:`gather` / :meth:`clear`."""
        return self._count

    def clear(self) -> None:
        """Forget what was added (call at epoch start if an epoch may end without :meth:`gather`)."""
        self._rows, self._count, self._order = {}, 0, None

    def add(self, **values: Tensor) -> None:
        """One batch: name -> (B, ...) per-sample values; the same names and B for every name, each batch."""
        sizes = {len(v) for v in values.values()}
        if len(sizes) != 1:
            raise ValueError(f"SampleResults.add: values of different lengths {sorted(sizes)}")
        if self._rows and set(values) != set(self._rows):
            raise ValueError(f"SampleResults.add: names {sorted(values)} differ from the first batch's "
                             f"{sorted(self._rows)}")
        for name, value in values.items():
            self._rows.setdefault(name, []).append(value.detach().cpu())
        self._count += sizes.pop()

    def take(self) -> dict[str, Tensor]:
        """This process's rows as added (no gathering, no de-duplication), then :meth:`clear`: for code that runs
        outside a Trainer (unit tests, scripts), where there is one process and no sampler padding."""
        values = {k: torch.cat(v) for k, v in self._rows.items()}
        self.clear()
        return values

    def next_indices(self, trainer: Any, stage: str, batch_size: int, dataloader_idx: int = 0) -> Tensor:
        """Dataset indices (B,) of the next ``batch_size`` samples, the batch about to be added: a seed per
        sample makes random evaluation (masks, noise) independent of batching and of the process count."""
        if self._order is None:
            self._order = dataloader_order(stage_dataloader(trainer, stage, dataloader_idx))
        return self._order[self._count : self._count + batch_size]

    def gather(self, trainer: Any, stage: str, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Every process's rows, each dataset sample once, sorted by index (see :func:`gather_samples`),
        then :meth:`clear`.  ``stage`` (``val`` / ``test``) names the trainer's dataloader that fed the rows.

        Returns ``{}`` on every process when no process added anything (e.g. zero batches).
        """
        order = self._order if self._order is not None else dataloader_order(
            stage_dataloader(trainer, stage, dataloader_idx))
        if len(order) < self._count:
            raise RuntimeError(f"SampleResults: {self._count} rows added but the {stage} dataloader yields "
                               f"{len(order)} samples on this process")
        values = {k: torch.cat(v) for k, v in self._rows.items()}
        index = order[: self._count]
        self.clear()
        return gather_samples(index, values)
