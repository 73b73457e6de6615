"""Multivariate series for SSSD: ``.npy`` arrays (N, L, C), the published layout, and CSV files
(time x channels) cut into windows with a stride.  NaN marks missing data.

The published layouts read as they are:

- MuJoCo: ``train_mujoco.npy`` / ``test_mujoco.npy``, (N, 100, 14);
- PTB-XL: ``train_ptbxl_1000.npy`` / ``val_ptbxl_1000.npy`` / ``test_ptbxl_1000.npy``, channels first
  (N, 12, 1000): ``data.layout: ncl``, or ``auto`` (the axis that matches ``data.channels``);
- ETTm1: ``ETTm1.csv`` (``date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT``, 15-minute steps), and Informer's
  ``electricity.csv`` (``date,0,...,319,OT``): plain CSV, the date column kept as the time index;
- Electricity: UCI's ``LD2011_2014.txt`` (``;``-separated, ``,`` as the decimal mark, a quoted
  ``"";"MT_001";...;"MT_370"`` header), the file SAITS and SSSD cut into windows: a header with more ``;`` than
  ``,`` is read as that format (``.txt`` and ``.csv`` alike).

Batches are raw (unstandardised, NaN kept) float32 tensors (B, L, C); the LightningModule
standardises them with per-channel statistics it keeps in its checkpoint (computed here on the
training split, ignoring NaN) and inverts the standardisation on output.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
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
    #: the time column's values as numbers (days for dates), when ``data.time_column`` names one
    times: np.ndarray | None = None


#: column names that say "time" (compared in lower case; a name containing "date" or "time" counts too)
TIME_NAMES = frozenset({"date", "time", "timestamp", "datetime", "ds", "t", "year", "day", "epoch", "unix"})


def looks_like_time(name: str, values: np.ndarray) -> str | None:
    """Why a numeric column looks like time stamps rather than a series (None if it does not).

    By its name (``date``, ``time``, ``timestamp``, ...), or by increasing integers that read as dates
    (``19580329``), years (``1958``) or Unix seconds.
    """
    low = name.strip().lower()
    if low in TIME_NAMES or "date" in low or "time" in low:
        return f"its name {name!r}"
    v = values[~np.isnan(values)]
    if len(v) < 3 or not np.all(v == np.round(v)) or not np.all(np.diff(v) > 0):
        return None
    if v.min() >= 1e7 and v.max() < 3e7:
        month, day = (v // 100) % 100, v % 100
        if np.all((month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)):
            return f"increasing integer dates such as {int(v[0])}"
    if v.min() >= 1000 and v.max() <= 3000:
        return f"increasing years such as {int(v[0])}"
    if v.min() >= 1e8 and v.max() < 1e10 and np.median(np.diff(v)) >= 1:
        return f"increasing Unix times such as {int(v[0])}"
    return None


def parse_times(labels: list[str], where: str) -> np.ndarray:
    """Time stamps as float64: plain numbers as they are, dates (``19580329``, ``1958-03-29[ 12:00]``) in days
    since 1970-01-01.  Raises a UserError naming ``where`` for a label that is neither."""
    out = np.empty(len(labels))
    for i, text in enumerate(labels):
        text = text.strip()
        try:
            if len(text) == 8 and text.isdigit():
                text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
            elif not any(c in text for c in "-/:T "):
                out[i] = float(text)
                continue
            stamp = np.datetime64(text.replace("/", "-"), "s")
            out[i] = stamp.astype("int64") / 86400.0
        except ValueError:
            raise UserError(f"{where}: row {i + 1}: {text!r} is neither a number nor a date "
                            "(YYYYMMDD, YYYY-MM-DD[ HH:MM[:SS]])") from None
    return out


def _number(text: str, decimal: str = ".") -> float:
    text = text.strip()
    if text in ("", "nan", "NaN", "NA", "null", "None"):
        return float("nan")
    return float(text.replace(decimal, ".") if decimal != "." else text)


#: file types read as delimited text (time x channels)
TABLE_SUFFIXES = (".csv", ".txt")


def is_table(path: str | Path) -> bool:
    """Whether ``path`` is read as delimited text (``.csv``, or ``.txt`` such as UCI's LD2011_2014.txt)."""
    return Path(path).suffix in TABLE_SUFFIXES


def sniff_dialect(header: str) -> tuple[str, str]:
    """``(delimiter, decimal mark)`` from a header line: ``;`` and ``,`` when it holds more ``;`` than ``,``
    (UCI's LD2011_2014.txt and other European exports), else ``,`` and ``.``."""
    return (";", ",") if header.count(";") > header.count(",") else (",", ".")


def read_csv(path: str | Path, time_column: str | None = None, drop_columns: Sequence[str] = (),
             detect_time: bool = False) -> SeriesFile:
    """A CSV of time x channels: header row, ``#`` comment lines skipped, empty cells = NaN; a first
    column that does not parse as numbers (dates) is kept as the index.

    ``time_column`` names the column of time stamps (kept as the index, parsed into ``times``);
    ``"none"`` says there is none.  ``drop_columns`` are left out.  With ``detect_time`` and no
    ``time_column``, a numeric column that looks like time (:func:`looks_like_time`) is an error naming
    it, rather than a series silently modelled as data.  The delimiter and decimal mark are sniffed from the
    header (:func:`sniff_dialect`): ``;`` with decimal commas is read as well as ``,``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    with path.open(newline="") as f:
        lines = [line for line in f if not line.lstrip().startswith("#")]
    delimiter, decimal = sniff_dialect(lines[0] if lines else "")
    rows = [r for r in csv.reader(lines, delimiter=delimiter) if r]
    del lines
    if len(rows) < 2:
        raise UserError(f"{path}: a CSV needs a header row and at least one row of values")
    header, body = rows[0], rows[1:]
    named = [c for c in (*drop_columns, *([time_column] if time_column not in (None, "none") else [])) if c]
    for column in named:
        if column not in header:
            raise UserError(f"{path}: no column {column!r} (data.time_column / data.drop_columns); "
                            f"the header has: {', '.join(header)}")
    keep = [i for i, c in enumerate(header) if c not in drop_columns]
    header, body = [header[i] for i in keep], [[r[i] if i < len(r) else "" for i in keep] for r in body]
    index, index_name, times = None, None, None
    if time_column not in (None, "none"):
        i = header.index(time_column)
        index, index_name = [r[i] for r in body], time_column
        times = parse_times(index, f"{path}: data.time_column {time_column!r}")
        if not np.all(np.diff(times) > 0):
            raise UserError(f"{path}: the time column {time_column!r} must increase from row to row (sort the file)")
        header, body = header[:i] + header[i + 1:], [r[:i] + r[i + 1:] for r in body]
    else:
        try:
            [_number(r[0], decimal) for r in body]
        except ValueError:
            index, index_name = [r[0] for r in body], header[0]
            header, body = header[1:], [r[1:] for r in body]
    try:
        values = np.array([[_number(v, decimal) for v in r] for r in body], dtype=np.float32)
    except ValueError as e:
        raise UserError(f"{path}: non-numeric value ({e}); only the first column may hold dates or labels") from e
    if values.ndim != 2 or values.shape[1] != len(header):
        raise UserError(f"{path}: every row needs {len(header)} values like the header")
    if detect_time and time_column is None:
        for j, name in enumerate(header):
            reason = looks_like_time(name, values[:, j])
            if reason:
                raise UserError(f"{path}: column {name!r} looks like time ({reason}), not a series; set "
                                f"data.time_column: {name} (or data.drop_columns: [{name}]), or "
                                f"data.time_column: none to model it as a channel")
    return SeriesFile(values, header, index, index_name, times)


#: how a 3-D .npy orders its axes: series, length, channels (``nlc``, MuJoCo) or channels first (``ncl``, PTB-XL)
LAYOUTS = ("auto", "nlc", "ncl")


def npy_layout(shape: tuple[int, ...], layout: str, channels: int | None, path: Path) -> str:
    """``nlc`` or ``ncl`` for a 3-D array: as given, or (``auto``) the axis of length ``channels``; with
    neither known, or both axes that long, ``nlc`` unless they differ (an error names ``data.layout``)."""
    if layout not in LAYOUTS:
        raise UserError(f"data.layout: unknown {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    if channels is None or shape[2] == channels and shape[1] != channels:
        return "nlc"
    if shape[1] == channels and shape[2] != channels:
        return "ncl"
    if shape[1] == shape[2] == channels:
        raise UserError(f"{path}: shape {shape} has {channels} on both the length and channel axes; set "
                        "data.layout: nlc (series, length, channels) or ncl (series, channels, length)")
    return "nlc"  # neither axis matches: the channel check names the mismatch


def read_series(path: str | Path, layout: str = "nlc", channels: int | None = None, **csv_options) -> SeriesFile:
    """Read ``.npy`` (N, L, C) or ``.csv`` / ``.txt`` (T, C).  NaN (an empty CSV cell) means missing; inf is an error.

    ``layout`` orders a 3-D .npy's axes (``nlc``; ``ncl`` for channels first, as the published PTB-XL arrays;
    ``auto``: the axis of length ``channels``, see :func:`npy_layout`); the result is always (N, L, C).
    ``csv_options`` go to :func:`read_csv` (``time_column``, ``drop_columns``, ``detect_time``); a .npy
    file takes none of them.
    """
    path = Path(path)
    if not is_table(path) and (csv_options.get("time_column") not in (None, "none") or csv_options.get("drop_columns")):
        raise UserError(f"{path}: data.time_column and data.drop_columns need a CSV file, not {path.suffix!r}")
    series = _read_series(path, layout=layout, channels=channels, **csv_options)
    infinite = np.isinf(series.values)
    if infinite.any():
        where = np.argwhere(infinite)[0].tolist()
        raise UserError(f"{path}: {int(infinite.sum())} infinite value(s), the first at index {where}; "
                        "missing values are NaN or empty cells, inf is not allowed")
    return series


def _read_series(path: Path, layout: str = "nlc", channels: int | None = None, **csv_options) -> SeriesFile:
    if not path.is_file():
        raise UserError(f"data file not found: {path} (build a stand-in with "
                        "`ssm sssd prepare mujoco|stocks|eeg|ett|electricity|ptbxl`)")
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False).astype(np.float32)
        except EOFError:
            raise UserError(f"{path}: empty file, not a .npy array; write the series with numpy.save") from None
        except (ValueError, TypeError, OSError) as e:  # a text, truncated, pickled or structured file
            reason = str(e).split("\n")[0]
            if "pickle" in reason:  # numpy's hint is to load it unsafely: never for a user's file
                reason = "it holds pickled objects or is not a .npy file at all; not loaded, as unpickling could run code"
            raise UserError(f"{path}: not a numeric .npy array ({reason}); write the series with numpy.save") from None
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3:
            raise UserError(f"{path}: a .npy series file must be (N, L, C), (N, C, L) with data.layout: ncl, "
                            f"or (L, C), got shape {values.shape}")
        if npy_layout(values.shape, layout, channels, path) == "ncl":
            values = np.ascontiguousarray(values.transpose(0, 2, 1))  # (N, C, L) -> (N, L, C)
        return SeriesFile(values, [f"ch{i}" for i in range(values.shape[-1])], None, None)
    if is_table(path):
        return read_csv(path, **csv_options)
    raise UserError(f"{path}: unsupported file type {path.suffix!r}; use .npy (N, L, C) or .csv / .txt "
                    "(time x channels)")


def windows(values: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Windows of ``length`` steps every ``stride`` steps: (T, C) -> (N, length, C)."""
    T = values.shape[0]
    if T < length:
        raise UserError(f"a segment of {T} steps is shorter than the window data.length={length}; "
                        f"lower data.length or the validation/test fractions")
    starts = range(0, T - length + 1, stride)
    return np.stack([values[s:s + length] for s in starts])


#: time steps within this relative distance of the nominal step count as regular (float64 dates in days
#: are exact to ~1e-9 of a 15-minute step)
REGULAR_TOLERANCE = 1e-6


def time_windows(times: np.ndarray, length: int, stride: int) -> np.ndarray:
    """The time stamps of :func:`windows`' windows, relative to each window's first row: (T,) -> (N, length)
    float64 (relative, so that float32 arithmetic later keeps the steps exact)."""
    out = windows(np.asarray(times, dtype=np.float64)[:, None], length, stride)[..., 0]
    return out - out[:, :1]


def median_step(times: np.ndarray) -> float:
    """The median step of time stamps (..., L) along the last axis (1.0 when there is none)."""
    steps = np.diff(np.asarray(times, dtype=np.float64), axis=-1).ravel()
    return float(np.median(steps)) if steps.size else 1.0


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
        path: a ``.npy`` file (N, L, C) (or (N, C, L), see ``layout``) or a ``.csv`` / ``.txt`` file (time x
            channels; UCI's ``;``-separated LD2011_2014.txt too).
        test_path: a separate test file (``.npy`` layout of the published MuJoCo set); otherwise the
            last ``test_fraction`` of ``path`` is the test split.
        val_path: a separate validation file (the published PTB-XL ``val_ptbxl_1000.npy``); otherwise the
            ``val_fraction`` of ``path`` before the test part is the validation split.
        channels: the number of channels (checked against the file; linked to ``model.channels``).
        length: CSV window length (required for CSV; a .npy keeps its own L).
        stride: CSV window stride.
        val_fraction, test_fraction: split fractions (CSV: contiguous time segments, in this order:
            train, validation, test, so no window straddles two splits; .npy: series).
        train_size, val_size, test_size: cap each split (None: all).
        batch_size, num_workers: loader options.
        time_column: a CSV's column of time stamps (numbers, or dates such as 19580329 or 1958-03-29): read
            as the time axis, not as a channel; ``none``: the file has none.  Left unset, a numeric column
            that looks like time (by its name, or increasing integer dates) is refused with a message
            naming it, so that a date is never modelled as data.
            With a layer that takes per-step time steps (``model.layer.name: s5``, ``s5_ptd``) the stamps
            drive its discretisation (:meth:`apps.sssd.module.SSSDModule.time_steps`): batches then carry
            each window's times (from the same rows as its values) beside its values; other layers accept
            only regular stamps.
        drop_columns: CSV columns to leave out.
        layout: axes of a 3-D ``.npy``: ``nlc`` (series, length, channels; MuJoCo), ``ncl`` (channels first;
            the published PTB-XL arrays) or ``auto`` (default: the axis of length ``channels``; an array with
            ``channels`` on both axes is refused until ``layout`` says which).
    """

    def __init__(self, path: str = "data/mujoco/train_mujoco.npy", test_path: str | None = None, channels: int = 14,
                 length: int | None = None, stride: int = 1, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 train_size: int | None = None, val_size: int | None = None, test_size: int | None = None,
                 batch_size: int = 32, num_workers: int = 0, time_column: str | None = None,
                 drop_columns: list[str] | None = None, val_path: str | None = None, layout: str = "auto") -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError("data.val_fraction and data.test_fraction must be in [0, 1) and sum below 1")
        if is_table(path) and length is None:
            raise ValueError("data.length is required for a CSV file (the window length)")
        if layout not in LAYOUTS:
            raise ValueError(f"data.layout: unknown {layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.splits: dict[str, np.ndarray] | None = None
        #: per split, each window's time stamps relative to its first row (N, L) float64, when the CSV has a
        #: time column (``data.time_column``); None otherwise
        self.time_splits: dict[str, np.ndarray] | None = None
        self._time_unit: float | None = None

    def _read_split(self, path: str, csv_options: dict, length: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A separate split file as windows (N, L, C), and its time windows (N, L) when it has a time column."""
        h = self.hparams
        times = None
        if is_table(path):
            data = read_series(path, **csv_options)
            values = windows(data.values, length, h.stride)
            times = time_windows(data.times, length, h.stride) if data.times is not None else None
        else:
            values = read_series(path, layout=h.layout, channels=h.channels).values
        if values.shape[-1] != h.channels:
            raise UserError(f"{path} has {values.shape[-1]} channels but {h.path} has {h.channels}")
        return values, times

    def _load(self) -> dict[str, np.ndarray]:
        h = self.hparams
        csv_options = {"time_column": h.time_column, "drop_columns": tuple(h.drop_columns or ())}
        table = is_table(h.path)
        data = read_series(h.path, layout=h.layout, channels=h.channels,
                           **(dict(csv_options, detect_time=True) if table else csv_options))
        self.times = data.times
        if data.values.shape[-1] != h.channels:
            hint = " (or data.layout: ncl for a channels-first (N, C, L) array)" if not table else ""
            raise UserError(f"data.channels is {h.channels} but {h.path} has {data.values.shape[-1]} channels; "
                            f"set data.channels: {data.values.shape[-1]}{hint}")
        times = None
        fractions = (0.0 if h.val_path else h.val_fraction, 0.0 if h.test_path else h.test_fraction)
        if table:
            series = data.values
            T = len(series)
            n_val, n_test = int(T * fractions[0]), int(T * fractions[1])
            n_train = T - n_val - n_test
            bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, T)}
            empty = np.zeros((0, h.length, h.channels), dtype=np.float32)
            splits = {k: windows(series[a:b], h.length, h.stride) if b > a else empty for k, (a, b) in bounds.items()}
            if data.times is not None:  # each window's time stamps, from the same rows as its values
                times = {k: time_windows(data.times[a:b], h.length, h.stride) if b > a else np.zeros((0, h.length))
                         for k, (a, b) in bounds.items()}
                self._time_unit = median_step(data.times[:n_train])
        else:
            values = data.values
            N = len(values)
            n_val, n_test = int(N * fractions[0]), int(N * fractions[1])
            n_train = N - n_val - n_test
            splits = {"train": values[:n_train], "val": values[n_train:n_train + n_val],
                      "test": values[n_train + n_val:]}
        for name, path in (("val", h.val_path), ("test", h.test_path)):
            if path:
                splits[name], split_times = self._read_split(path, csv_options, h.length or splits["train"].shape[1])
                if times is not None:
                    if split_times is None:
                        raise UserError(f"{path}: no time column {h.time_column!r} (data.time_column), which "
                                        f"{h.path} has; give every split file the same columns")
                    times[name] = split_times
        for name, cap in (("train", h.train_size), ("val", h.val_size), ("test", h.test_size)):
            if cap is not None:
                splits[name] = splits[name][:cap]
                if times is not None:
                    times[name] = times[name][:cap]
        if len(splits["train"]) == 0:
            raise UserError(f"{h.path}: the training split is empty; lower data.val_fraction/test_fraction")
        self.time_splits = times
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

    def time_unit(self) -> float | None:
        """The nominal step of the series: the median time step of the training split's rows, in the time
        column's units (days for dates); None without a time column."""
        self.setup()
        return self._time_unit

    def irregular_steps(self, unit: float | None = None) -> str | None:
        """How the time steps of the windows of every split stray from ``unit`` (default :meth:`time_unit`), as
        a phrase for a message; None when they are all ``unit`` (within :data:`REGULAR_TOLERANCE`) or there
        is no time column."""
        self.setup()
        if self.time_splits is None:
            return None
        unit = unit or self.time_unit()
        steps = np.concatenate([np.diff(t, axis=-1).ravel() for t in self.time_splits.values()]) / unit
        if steps.size == 0 or np.abs(steps - 1).max() <= REGULAR_TOLERANCE:
            return None
        return f"steps from {steps.min():.3g} to {steps.max():.3g} times the median step {unit:.4g}"

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        """Batches of (values (B, L, C),) or, with a time column, (values, times (B, L) float64 from each window's
        first row)."""
        self.setup()
        values = torch.from_numpy(np.ascontiguousarray(self.splits[name]))
        tensors = [values]
        if self.time_splits is not None:
            tensors.append(torch.from_numpy(np.ascontiguousarray(self.time_splits[name])))
        return DataLoader(TensorDataset(*tensors), batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers)


