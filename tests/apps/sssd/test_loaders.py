"""The published layouts SSSD's users load: ETTm1.csv, UCI's LD2011_2014.txt and Informer's electricity.csv,
and the channels-first PTB-XL arrays; each read from a tiny file that ``ssm sssd prepare`` generates (or the
test writes), and the preparers' layouts, determinism and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apps.common.cli import main
from apps.common.errors import UserError
from apps.sssd.data import SeriesData, read_series, sniff_dialect
from apps.sssd.prepare import ETT_COLUMNS, PTBXL_LEADS, electricity_values, ett_values


def _prepare(tmp_path, *argv) -> None:
    assert main(["sssd", "prepare", *argv, "--out", str(tmp_path)]) == 0


def test_ettm1_layout_and_loading(tmp_path):
    _prepare(tmp_path, "ett", "--n", "300", "--seed", "3")
    path = tmp_path / "ETTm1.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == "date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT" and len(lines) == 301
    assert lines[1].startswith("2016-07-01 00:00:00,") and lines[2].startswith("2016-07-01 00:15:00,")
    data = read_series(path)
    assert data.names == list(ETT_COLUMNS) and data.index_name == "date" and data.index[-1] == "2016-07-04 02:45:00"
    assert np.allclose(data.values, ett_values(300, 3), atol=6e-4)  # written with 3 decimals
    dm = SeriesData(path=str(path), channels=7, length=48, stride=8, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert dm.splits["train"].shape == (17, 48, 7) and dm.splits["val"].shape[1:] == (48, 7)
    assert np.array_equal(dm.splits["train"][1], data.values[8:56])


def test_uci_electricity_txt(tmp_path):
    _prepare(tmp_path, "electricity", "--n", "120", "--clients", "6", "--seed", "1")
    path = tmp_path / "LD2011_2014.txt"
    header, first = path.read_text().splitlines()[:2]
    assert header == '"";"MT_001";"MT_002";"MT_003";"MT_004";"MT_005";"MT_006"'
    assert first.startswith('"2011-01-01 00:15:00";') and "," in first and "." not in first.split(";", 1)[1]
    assert sniff_dialect(header) == (";", ",")
    data = read_series(path)
    assert data.names == [f"MT_{i:03d}" for i in range(1, 7)] and data.index[0] == "2011-01-01 00:15:00"
    expected = electricity_values(120, 6, 1)
    assert np.allclose(data.values, expected, rtol=1e-6, atol=1e-6)
    dm = SeriesData(path=str(path), channels=6, length=24, stride=24, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert dm.splits["train"].shape == (3, 24, 6)


def test_informer_electricity_csv_and_a_semicolon_csv(tmp_path):
    """Informer / Autoformer's electricity.csv (date, client numbers, OT) is a plain CSV; a European CSV too."""
    rows = ["date,0,1,2,OT"] + [f"2016-07-01 {h:02d}:00:00,{h * 1.5:.1f},{h + 2},{30 - h},{h % 5}" for h in range(24)]
    (tmp_path / "electricity.csv").write_text("\n".join(rows) + "\n")
    data = read_series(tmp_path / "electricity.csv", detect_time=True)
    assert data.names == ["0", "1", "2", "OT"] and data.values.shape == (24, 4) and data.values[3, 0] == 4.5
    (tmp_path / "eu.csv").write_text("t;a;b\n0;1,5;2\n1;;3,25\n")
    data = read_series(tmp_path / "eu.csv", time_column="t")
    assert np.array_equal(data.values, np.array([[1.5, 2.0], [np.nan, 3.25]], dtype=np.float32), equal_nan=True)


def test_ptbxl_channels_first_arrays(tmp_path):
    _prepare(tmp_path, "ptbxl", "--n", "20", "--seed", "2")
    train, val, test = (np.load(tmp_path / f"{s}_ptbxl_1000.npy") for s in ("train", "val", "test"))
    assert train.shape == (16, 12, 1000) and val.shape == test.shape == (2, 12, 1000) and train.dtype == np.float32
    lead = {name: train[:, i] for i, name in enumerate(PTBXL_LEADS)}
    assert np.allclose(lead["III"], lead["II"] - lead["I"], atol=1e-5)  # Einthoven
    assert np.allclose(lead["aVR"] + lead["aVL"] + lead["aVF"], 0, atol=1e-5)  # Goldberger
    assert 0.05 < train.std() < 1.0  # mV
    kw = dict(path=str(tmp_path / "train_ptbxl_1000.npy"), val_path=str(tmp_path / "val_ptbxl_1000.npy"),
              test_path=str(tmp_path / "test_ptbxl_1000.npy"), channels=12)
    for layout in ("auto", "ncl"):
        dm = SeriesData(**kw, layout=layout)
        dm.setup()
        assert {k: v.shape for k, v in dm.splits.items()} == {"train": (16, 1000, 12), "val": (2, 1000, 12),
                                                             "test": (2, 1000, 12)}
        assert np.array_equal(dm.splits["train"], train.transpose(0, 2, 1))
        assert np.array_equal(dm.splits["val"], val.transpose(0, 2, 1))
    dm = SeriesData(**kw, layout="nlc")
    with pytest.raises(UserError, match="data.layout: ncl"):
        dm.setup()


def test_layout_auto_keeps_mujoco_and_refuses_an_ambiguous_array(tmp_path):
    np.save(tmp_path / "nlc.npy", np.zeros((4, 100, 14), dtype=np.float32))
    assert read_series(tmp_path / "nlc.npy", layout="auto", channels=14).values.shape == (4, 100, 14)
    np.save(tmp_path / "square.npy", np.zeros((4, 12, 12), dtype=np.float32))
    with pytest.raises(UserError, match="set data.layout: nlc"):
        read_series(tmp_path / "square.npy", layout="auto", channels=12)
    assert read_series(tmp_path / "square.npy", layout="ncl", channels=12).values.shape == (4, 12, 12)
    with pytest.raises(ValueError, match="data.layout"):
        SeriesData(path=str(tmp_path / "nlc.npy"), layout="lnc")


def test_preparers_are_deterministic_and_checked(tmp_path, capsys):
    _prepare(tmp_path / "a", "ptbxl", "--n", "10", "--seed", "5")
    _prepare(tmp_path / "b", "ptbxl", "--n", "10", "--seed", "5")
    _prepare(tmp_path / "c", "ptbxl", "--n", "10", "--seed", "6")
    a, b, c = ((tmp_path / d / "train_ptbxl_1000.npy").read_bytes() for d in "abc")
    assert a == b and a != c
    settings = json.loads((tmp_path / "a" / ".ssm-prepared.json").read_text())
    assert "ptbxl" in json.dumps(settings) and "5" in json.dumps(settings)
    capsys.readouterr()
    assert main(["sssd", "prepare", "ptbxl", "--n", "3", "--out", str(tmp_path / "d")]) == 2
    assert "--n must be at least 10 for ptbxl" in capsys.readouterr().err
    assert main(["sssd", "prepare", "electricity", "--clients", "0", "--out", str(tmp_path / "e")]) == 2
    assert "--clients must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
