"""Shared LightningDataModule plumbing: the four dataloader hooks from one ``_loader(split, shuffle)``."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader


class SplitDataModule(pl.LightningDataModule):
    """A datamodule whose splits are served by ``_loader(split, shuffle)``.

    Training shuffles; validation, test and predict do not.  ``predict`` reads the test split.
    Subclasses name their validation split in ``val_split`` when it is not ``"val"``.
    """

    val_split = "val"

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)
