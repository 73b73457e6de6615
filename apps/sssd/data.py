"""Multivariate series for SSSD: ``.npy`` arrays (N, L, C), the published layout, and CSV files
(time x channels) cut into windows with a stride.  NaN marks missing data.

Batches are raw (unstandardised, NaN kept) float32 tensors (B, L, C); the LightningModule
standardises them with per-channel statistics it keeps in its checkpoint (computed here on the
training split, ignoring NaN) and inverts the standardisation on output.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from apps.common.data import SplitDataModule
from apps.common.errors import UserError


@dataclass
class SeriesFile:
    """What a data file holds: ``values`` (N, L, C) for .npy, (T, C) for CSV; channel names; the CSV's
    first column when it is not numeric (dates), else None."""

    values: np.ndarray
    names: list[str]
    index: list[str] | None
    index_name: str | None


def _number(text: str) -> float:
    text = text.strip()
    if text in ("", "nan", "NaN", "NA", "null", "None"):
        return float("nan")
    return float(text)


def read_csv(path: str | Path) -> SeriesFile:
    """A CSV of time x channels: header row, ``#`` comment lines skipped, empty cells = NaN; a first
    column that does not parse as numbers (dates) is kept as the index."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(line for line in f if not line.lstrip().startswith("#")) if r]
    if len(rows) < 2:
        raise UserError(f"{path}: a CSV needs a header row and at least one row of values")
    header, body = rows[0], rows[1:]
    index, index_name = None, None
    try:
        [_number(r[0]) for r in body]
    except ValueError:
        index, index_name = [r[0] for r in body], header[0]
        header, body = header[1:], [r[1:] for r in body]
    try:
        values = np.array([[_number(v) for v in r] for r in body], dtype=np.float32)
    except ValueError as e:
        raise UserError(f"{path}: non-numeric value ({e}); only the first column may hold dates or labels") from e
    if values.ndim != 2 or values.shape[1] != len(header):
        raise UserError(f"{path}: every row needs {len(header)} values like the header")
    return SeriesFile(values, header, index, index_name)


def read_series(path: str | Path) -> SeriesFile:
    """Read ``.npy`` (N, L, C) or ``.csv`` (T, C).  NaN (an empty CSV cell) means missing; inf is an error."""
    series = _read_series(Path(path))
    infinite = np.isinf(series.values)
    if infinite.any():
        where = np.argwhere(infinite)[0].tolist()
        raise UserError(f"{path}: {int(infinite.sum())} infinite value(s), the first at index {where}; "
                        "missing values are NaN or empty cells, inf is not allowed")
    return series


def _read_series(path: Path) -> SeriesFile:
    if not path.is_file():
        raise UserError(f"data file not found: {path} (build a stand-in with `ssm sssd prepare mujoco|stocks|eeg`)")
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False).astype(np.float32)
        except ValueError as e:
            raise UserError(f"{path}: not a numeric .npy array ({e})") from e
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3:
            raise UserError(f"{path}: a .npy series file must be (N, L, C) or (L, C), got shape {values.shape}")
        return SeriesFile(values, [f"ch{i}" for i in range(values.shape[-1])], None, None)
    if path.suffix == ".csv":
        return read_csv(path)
    raise UserError(f"{path}: unsupported file type {path.suffix!r}; use .npy (N, L, C) or .csv (time x channels)")


def windows(values: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Windows of ``length`` steps every ``stride`` steps: (T, C) -> (N, length, C)."""
    T = values.shape[0]
    if T < length:
        raise UserError(f"a segment of {T} steps is shorter than the window data.length={length}; "
                        f"lower data.length or the validation/test fractions")
    starts = range(0, T - length + 1, stride)
    return np.stack([values[s:s + length] for s in starts])


def channel_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation ignoring NaN: (..., C) -> (C,), (C,); a constant channel gets std 1."""
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    if np.isnan(flat).all(axis=0).any():
        bad = np.where(np.isnan(flat).all(axis=0))[0].tolist()
        raise UserError(f"channel(s) {bad} of the training data are entirely NaN; drop them from the file")
    mean, std = np.nanmean(flat, axis=0), np.nanstd(flat, axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


class SeriesData(SplitDataModule):
    """Train/val/test series for SSSD.

    Args:
        path: a ``.npy`` file (N, L, C) or a ``.csv`` file (time x channels).
        test_path: a separate test file (``.npy`` layout of the published MuJoCo set); otherwise the
            last ``test_fraction`` of ``path`` is the test split.
        channels: the number of channels (checked against the file; linked to ``model.channels``).
        length: CSV window length (required for CSV; a .npy keeps its own L).
        stride: CSV window stride.
        val_fraction, test_fraction: split fractions (CSV: contiguous time segments, in this order:
            train, validation, test, so no window straddles two splits; .npy: series).
        train_size, val_size, test_size: cap each split (None: all).
        batch_size, num_workers: loader options.
    """

    def __init__(self, path: str = "data/mujoco/train_mujoco.npy", test_path: str | None = None, channels: int = 14,
                 length: int | None = None, stride: int = 1, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 train_size: int | None = None, val_size: int | None = None, test_size: int | None = None,
                 batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError("data.val_fraction and data.test_fraction must be in [0, 1) and sum below 1")
        if Path(path).suffix == ".csv" and length is None:
            raise ValueError("data.length is required for a CSV file (the window length)")
        self.splits: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        h = self.hparams
        data = read_series(h.path)
        if data.values.shape[-1] != h.channels:
            raise UserError(f"data.channels is {h.channels} but {h.path} has {data.values.shape[-1]} channels; "
                            f"set data.channels: {data.values.shape[-1]}")
        fractions = (h.val_fraction, 0.0 if h.test_path else h.test_fraction)
        if Path(h.path).suffix == ".csv":
            series = data.values
            T = len(series)
            n_val, n_test = int(T * fractions[0]), int(T * fractions[1])
            n_train = T - n_val - n_test
            bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, T)}
            empty = np.zeros((0, h.length, h.channels), dtype=np.float32)
            splits = {k: windows(series[a:b], h.length, h.stride) if b > a else empty for k, (a, b) in bounds.items()}
        else:
            values = data.values
            N = len(values)
            n_val, n_test = int(N * fractions[0]), int(N * fractions[1])
            n_train = N - n_val - n_test
            splits = {"train": values[:n_train], "val": values[n_train:n_train + n_val],
                      "test": values[n_train + n_val:]}
        if h.test_path:
            test = read_series(h.test_path).values
            if Path(h.test_path).suffix == ".csv":
                test = windows(test, h.length or len(splits["train"][0]), h.stride)
            if test.shape[-1] != h.channels:
                raise UserError(f"{h.test_path} has {test.shape[-1]} channels but {h.path} has {h.channels}")
            splits["test"] = test
        for name, cap in (("train", h.train_size), ("val", h.val_size), ("test", h.test_size)):
            if cap is not None:
                splits[name] = splits[name][:cap]
        if len(splits["train"]) == 0:
            raise UserError(f"{h.path}: the training split is empty; lower data.val_fraction/test_fraction")
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self._load()

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the training split (NaN ignored); a channel with no value in the
        training split (a ticker listed later) takes them from every split."""
        self.setup()
        C = self.hparams.channels
        train = self.splits["train"].reshape(-1, C)
        empty = np.isnan(train).all(axis=0)
        if not empty.any():
            return channel_stats(train)
        every = np.concatenate([v.reshape(-1, C) for v in self.splits.values()])
        mean_train, std_train = channel_stats(np.where(empty, 0.0, train))  # placeholders where empty
        mean_every, std_every = channel_stats(every)
        return np.where(empty, mean_every, mean_train), np.where(empty, std_every, std_train)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        self.setup()
        values = torch.from_numpy(np.ascontiguousarray(self.splits[name]))
        return DataLoader(TensorDataset(values), batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers)


