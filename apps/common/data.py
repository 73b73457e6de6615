"""Shared LightningDataModule plumbing: the four dataloader hooks from one ``_loader(split, shuffle)``."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader


class SplitDataModule(pl.LightningDataModule):
    """A datamodule whose splits are served by its ``_loader(split: str, shuffle: bool) -> DataLoader``.

    Subclasses define ``_loader``.  Training shuffles; validation, test and predict do not, and
    ``predict`` reads the test split.  ``val_split`` names the validation split when it is not ``"val"``;
    ``test_dataloader(split)`` serves another evaluation split where a subclass's ``_loader`` knows one.
    """

    val_split = "val"

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, False)

    def test_dataloader(self, split: str = "test") -> DataLoader:
        return self._loader(split, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)
