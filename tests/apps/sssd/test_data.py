"""Data: CSV with dates and gaps, windows with a stride, NaN-aware statistics, channel checks."""

from __future__ import annotations

import numpy as np
import pytest

from apps.common.errors import UserError
from apps.sssd.data import SeriesData, channel_stats, read_series, windows

CSV = """# a comment line
Date,A,B
2020-01-01,1.0,
2020-01-02,2.0,4.0
2020-01-03,,6.0
2020-01-04,4.0,8.0
"""


def test_csv_keeps_dates_as_index_and_gaps_as_nan(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(CSV)
    data = read_series(path)
    assert data.names == ["A", "B"] and data.index_name == "Date" and data.index[0] == "2020-01-01"
    assert data.values.shape == (4, 2)
    assert np.isnan(data.values[0, 1]) and np.isnan(data.values[2, 0]) and data.values[3, 1] == 8.0


def test_windows_and_nan_aware_stats():
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    w = windows(values, 4, 3)
    assert w.shape == (3, 4, 2) and (w[1, 0] == values[3]).all()
    values[0, 0] = np.nan
    mean, std = channel_stats(values)
    assert mean[0] == pytest.approx(np.mean(values[1:, 0])) and std[1] == pytest.approx(np.std(values[:, 1]))
    with pytest.raises(UserError, match="entirely NaN"):
        channel_stats(np.full((3, 2), np.nan, dtype=np.float32))


def test_datamodule_splits_csv_in_time_and_npy_by_series(tmp_path):
    rng = np.random.default_rng(0)
    csv_path = tmp_path / "long.csv"
    rows = ["x,y"] + [f"{a:.3f},{b:.3f}" for a, b in rng.normal(size=(100, 2))]
    csv_path.write_text("\n".join(rows))
    dm = SeriesData(str(csv_path), channels=2, length=10, stride=5, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [11, 3, 3]
    npy = tmp_path / "s.npy"
    np.save(npy, rng.normal(size=(50, 16, 3)).astype(np.float32))
    dm = SeriesData(str(npy), channels=3, val_fraction=0.1, test_fraction=0.2, batch_size=8)
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [35, 5, 10]
    assert next(iter(dm.train_dataloader()))[0].shape == (8, 16, 3)
    with pytest.raises(UserError, match="data.channels is 4"):
        SeriesData(str(npy), channels=4).setup()


def test_a_channel_empty_in_the_training_split_takes_its_stats_from_every_split(tmp_path):
    rows = ["x,y"] + [f"{t},{'' if t < 70 else 2 * t}" for t in range(100)]
    path = tmp_path / "late.csv"
    path.write_text("\n".join(rows))
    dm = SeriesData(str(path), channels=2, length=10, val_fraction=0.15, test_fraction=0.15)
    mean, std = dm.stats()
    assert mean[0] == pytest.approx(np.arange(70).mean())
    assert mean[1] == pytest.approx(2 * np.arange(70, 100).mean())
