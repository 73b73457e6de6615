"""``ssm speech zero-shot`` writes its table (markdown, CSV, PNG) for every rate x input x rate change."""

from __future__ import annotations

import csv

import pytest

from apps.common.cli import main
from apps.speech.zero_shot import parse_rates
from tests.apps.speech.speech_sets import tiny_checkpoint


def test_zero_shot_writes_its_table(tmp_path_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    out = tmp_path / "zs"
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--rates", "8000,16000,4000", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("zero_shot.md", "zero_shot.csv", "zero_shot.png"):
        assert (out / name).is_file() and str(out / name) in printed
    assert (out / "zero_shot.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(out / "zero_shot.csv")))
    assert len(rows) == 3 * 2 * 2 + 2  # + the training-rate input low-passed to 8 and 4 kHz audio's bands
    lowpassed = {r["input"]: r for r in rows if r["input"].startswith("low-passed")}
    assert set(lowpassed) == {"low-passed at 4000 Hz", "low-passed at 2000 Hz"}
    assert all(r["sample rate (Hz)"] == "16000" and r["rate change"] == "no" for r in lowpassed.values())
    band = list(csv.DictReader(open(out / "kernel_band.csv")))
    assert [r["cut-off (Hz)"] for r in band] == ["4000", "2000"]
    shares = [float(r["median share above (%)"]) for r in band]
    assert 0 <= shares[0] <= shares[1] <= 100  # more of the kernels' energy lies above 2 kHz than above 4 kHz
    assert (out / "kernel_band.png").read_bytes()[:4] == b"\x89PNG" and "kernel_band.csv" in printed
    keyed = {(r["sample rate (Hz)"], r["input"], r["rate change"]): r for r in rows}
    assert float(keyed["8000", "resampled", "yes"]["SSM rate"]) == 2.0
    assert float(keyed["4000", "naive decimation", "yes"]["SSM rate"]) == 4.0
    assert float(keyed["8000", "resampled", "no"]["SSM rate"]) == 1.0
    at_train = {r["accuracy (%)"] for r in rows if r["sample rate (Hz)"] == "16000" and r["input"] not in lowpassed}
    assert len(at_train) == 1  # at the training rate every way of feeding the (unfiltered) data is the same
    assert all(0 <= float(r["accuracy (%)"]) <= 100 for r in rows)
    assert float(keyed["16000", "resampled", "yes"]["vs training rate (points)"]) == 0
    assert "| 8000 | resampled | yes | 2 |" in (out / "zero_shot.md").read_text()


def test_rates_and_checkpoint_mistakes(tmp_path, capsys):
    assert parse_rates("16000, 8000,8000") == [16000, 8000]
    with pytest.raises(Exception, match="--rates needs"):
        parse_rates("32000")
    assert main(["speech", "zero-shot", "--ckpt", str(tmp_path / "none.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
