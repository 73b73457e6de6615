"""``ssm sashimi prepare piano``: Bach chorales -> MIDI -> fluidsynth -> 16 kHz mono WAVs in train/val/test."""

from __future__ import annotations

import csv

import soundfile

from apps.common.cli import main
from apps.sashimi.piano import chorale_paths, split_of


def test_split_is_deterministic_and_covers_all_three():
    splits = [split_of(i) for i in range(20)]
    assert splits[:3] == ["train", "val", "test"] and splits.count("train") == 16
    assert splits == [split_of(i) for i in range(20)]
    assert len(chorale_paths()) > 300  # the corpus ships inside the music21 wheel


def test_prepare_renders_piano_wavs_in_the_folder_layout(tmp_path, capsys):
    out = tmp_path / "piano"
    assert main(["sashimi", "prepare", "piano", "--out", str(out), "--minutes", "0.05", "--seed", "3"]) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert {r["split"] for r in rows} == {"train", "val", "test"} and len(rows) == 3
    for r in rows:
        info = soundfile.info(str(out / r["file"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.frames > 16000 * 5
    data, _ = soundfile.read(str(out / rows[0]["file"]))
    assert 0.01 < abs(data).max() <= 1.0  # audible, not clipped silence
    # the same seed draws the same chorales; an existing set is kept unless --force
    assert main(["sashimi", "prepare", "piano", "--out", str(out), "--minutes", "0.05", "--seed", "3"]) == 0
    assert "already holds" in capsys.readouterr().out


def test_bad_minutes_is_a_one_line_error(tmp_path, capsys):
    assert main(["sashimi", "prepare", "piano", "--out", str(tmp_path), "--minutes", "0"]) == 2
    assert "--minutes" in capsys.readouterr().err
