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


def _co2(tmp_path):
    path = tmp_path / "co2.csv"
    rows = ["date,co2"] + [f"1958{m:02d}{d:02d},{315 + 0.1 * i:.2f}" for i, (m, d) in
                           enumerate((m, d) for m in range(3, 13) for d in (1, 8, 15, 22))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_date_column_is_never_modelled_as_data(tmp_path):
    """A public weekly CO2 series (``date,co2``, dates written as numbers) is one channel, with its dates as time."""
    from apps.common.errors import UserError
    from apps.sssd.data import looks_like_time

    path = _co2(tmp_path)
    with pytest.raises(UserError, match=r"column 'date' looks like time .*data.time_column: date"):
        SeriesData(path=str(path), channels=1, length=3).setup()
    data = SeriesData(path=str(path), channels=1, length=3, time_column="date")
    data.setup()
    assert data.splits["train"].shape[-1] == 1
    assert data.times[0] == pytest.approx(np.datetime64("1958-03-01").astype("int64"))  # days since 1970
    assert np.allclose(np.diff(data.times)[:3], 7)
    # or drop it, or keep it as a channel on purpose
    SeriesData(path=str(path), channels=1, length=3, drop_columns=["date"]).setup()
    SeriesData(path=str(path), channels=2, length=3, time_column="none").setup()
    # recognised by the values alone, whatever the name
    assert "integer dates" in looks_like_time("when", np.array([19580301.0, 19580308, 19580315]))
    assert looks_like_time("co2", np.array([315.1, 315.3, 316.0])) is None
    assert "years" in looks_like_time("yr", np.array([1958.0, 1959, 1960]))


def test_time_column_errors_name_the_column(tmp_path):
    from apps.common.errors import UserError

    path = _co2(tmp_path)
    with pytest.raises(UserError, match="no column 'stamp'.*the header has: date, co2"):
        SeriesData(path=str(path), channels=1, length=3, time_column="stamp").setup()
    shuffled = tmp_path / "shuffled.csv"
    lines = path.read_text().splitlines()
    shuffled.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(UserError, match="must increase"):
        SeriesData(path=str(shuffled), channels=1, length=3, time_column="date").setup()
    bad = tmp_path / "bad.csv"
    bad.write_text("when,x\nmonday,1\ntuesday,2\nwednesday,3\n")
    with pytest.raises(UserError, match="'monday' is neither a number nor a date"):
        SeriesData(path=str(bad), channels=1, length=2, time_column="when").setup()
    npy = tmp_path / "s.npy"
    np.save(npy, np.zeros((4, 8, 1), dtype=np.float32))
    with pytest.raises(UserError, match="need a CSV file"):
        SeriesData(path=str(npy), channels=1, time_column="date").setup()


def test_a_npy_that_is_not_a_numeric_array_is_one_line_naming_the_file(tmp_path):
    """An empty, text, pickled or structured .npy is one UserError naming the file (an empty one was an EOFError
    traceback), and the message never suggests loading a pickle."""
    empty, text, pickled, records = (tmp_path / f"{n}.npy" for n in ("empty", "text", "pickled", "records"))
    empty.write_bytes(b"")
    text.write_text("1,2,3\n")
    with open(pickled, "wb") as f:  # an object-array header, as a pickled .npy has; the body is never read
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        f.write(b"\x80\x04not a pickle")
    np.save(records, np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]))
    with pytest.raises(UserError, match=f"{empty}: empty file, not a .npy array"):
        read_series(empty)
    for path in (text, pickled):
        with pytest.raises(UserError, match=f"{path}: not a numeric .npy array") as e:
            read_series(path)
        assert "allow_pickle" not in str(e.value) and "could run code" in str(e.value)
    with pytest.raises(UserError, match=f"{records}: not a numeric .npy array"):
        read_series(records)
