"""``ssm speech prepare``: the v0.02 layout, deterministic from the seed, voice-disjoint splits."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile

from apps.common.cli import main
from apps.speech.prepare import build, plan_clips, trim_silence
from tests.apps.speech.speech_sets import WORDS, built_twice, digest, tiny_set


def _speaker(line: str) -> str:
    return line.split("/")[1].split("_nohash_")[0]


def test_layout_one_second_16k_mono_lists_and_background(tmp_path_factory):
    root = tiny_set(tmp_path_factory)
    for word in WORDS:
        clips = sorted((root / word).glob("*_nohash_*.wav"))
        assert len(clips) == 10
        info = soundfile.info(str(clips[0]))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    val = (root / "validation_list.txt").read_text().split()
    test = (root / "testing_list.txt").read_text().split()
    assert len(val) == len(test) == len(WORDS)  # round(0.1 * 10) = 1 per word
    assert all((root / line).is_file() for line in val + test)
    noise = sorted(p.stem for p in (root / "_background_noise_").glob("*.wav"))
    assert noise == ["brown_noise", "hum", "pink_noise", "white_noise"]


def test_splits_are_voice_disjoint(tmp_path_factory):
    root = tiny_set(tmp_path_factory)
    val = {_speaker(x) for x in (root / "validation_list.txt").read_text().split()}
    test = {_speaker(x) for x in (root / "testing_list.txt").read_text().split()}
    held = set((root / "validation_list.txt").read_text().split()) | set((root / "testing_list.txt").read_text().split())
    train = {p.name.split("_nohash_")[0] for w in WORDS for p in (root / w).glob("*.wav") if f"{w}/{p.name}" not in held}
    assert train and val and test
    assert not (train & val) and not (train & test) and not (val & test)
    splits = {row["speaker"]: row["split"] for row in csv.DictReader(open(root / "voices.csv"))}
    assert {splits[s] for s in train} == {"train"} and {splits[s] for s in test} == {"testing"}
    # the plan itself: with many clips per word every speaker stays in its own split
    clips, split_of, _ = plan_clips(["go"], 200, seed=3, noise=0.0, variants=["m1", "f2", "klatt"])
    by_split: dict[str, set] = {}
    for clip in clips:
        by_split.setdefault(split_of[clip.speaker], set()).add(clip.speaker)
    assert sum(len(s) for s in by_split.values()) == len(set().union(*by_split.values()))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    build(tmp_path / "a", ["go", "stop"], 4, seed=7, noise=0.01, jobs=2, noise_seconds=0.5)
    build(tmp_path / "b", ["go", "stop"], 4, seed=7, noise=0.01, jobs=1, noise_seconds=0.5)
    build(tmp_path / "c", ["go", "stop"], 4, seed=8, noise=0.01, jobs=2, noise_seconds=0.5)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert (tmp_path / "a" / "testing_list.txt").read_text() == (tmp_path / "b" / "testing_list.txt").read_text()
    assert a != c


def test_trim_silence_keeps_the_loud_part():
    import numpy as np

    wav = np.zeros(1000, np.float32)
    wav[400:500] = 0.5
    trimmed = trim_silence(wav, rate=1000, margin_s=0.01)
    assert len(trimmed) == 100 + 2 * 10 and np.abs(trimmed).max() == 0.5


def test_cli_keeps_an_existing_set_and_reports_mistakes(tmp_path, capsys):
    out = tmp_path / "sc"
    assert main(["speech", "prepare", "--out", str(out), "--words", "yes,no",
                 "--per-word", "3", "--jobs", "2"]) == 0
    assert "wrote 6 clips of 2 words" in capsys.readouterr().out
    assert main(["speech", "prepare", "--out", str(out), "--words", "yes"]) == 0
    assert "kept (pass --force to rebuild" in capsys.readouterr().out
    assert main(["speech", "prepare", "--out", str(tmp_path / "x"), "--per-word", "2"]) == 2
    assert "--per-word must be at least 3" in capsys.readouterr().err
    assert main(["speech", "prepare", "--out", str(out), "--words", "yes,no", "--per-word", "-3"]) == 2
    assert "--per-word must be at least 3" in capsys.readouterr().err  # a bad value is said, not "kept"
    assert main(["speech", "prepare", "--out", str(tmp_path / "x"), "--words", "sc99"]) == 2
    assert "--words takes sc35, sc10, sc09" in capsys.readouterr().err


def test_flite_stand_in_same_layout_its_own_speakers_and_deterministic(tmp_path):
    root = built_twice(tmp_path, "flite")
    clip = sorted((root / "go").glob("*_nohash_*.wav"))[0]
    info = soundfile.info(str(clip))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 16000)
    voices = list(csv.DictReader(open(root / "voices.csv")))
    assert {v["voice"].split("@")[0] for v in voices} <= {"kal", "kal16", "awb", "rms", "slt"}
    assert len(voices) == 5 * 9  # voice x vocal-tract warp
    assert "spoken by flite" in (root / "README.md").read_text()
    wav, _ = soundfile.read(str(clip))
    assert abs(wav).max() > 0.1  # it speaks


def test_flite_voice_warp_moves_the_pitch(tmp_path):
    from apps.speech.prepare import Clip, synthesise

    def clip(voice):
        return Clip("no", "x", 0, voice, pitch=120, speed=100, gain=0.5, offset=0.0, noise=0.0, seed=0)

    def pitch(wav):  # the autocorrelation peak between 60 and 400 Hz over the loud part
        loud = wav[abs(wav) > 0.2 * abs(wav).max()]
        ac = np.correlate(loud, loud, "full")[loud.size - 1:]
        lag = 40 + int(np.argmax(ac[40:267]))
        return 16000 / lag

    low, high = pitch(synthesise(clip("slt@0.84"), "flite")), pitch(synthesise(clip("slt@1.16"), "flite"))
    assert 1.2 < high / low < 1.55  # 1.16 / 0.84 = 1.38


def test_festival_stand_in_same_layout_its_own_speakers_and_deterministic(tmp_path):
    root = built_twice(tmp_path, "festival")
    clips = sorted(root.glob("*/*_nohash_*.wav"))
    assert len(clips) == 8
    for clip in clips:
        info = soundfile.info(str(clip))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 16000)
        wav, _ = soundfile.read(str(clip))
        assert abs(wav).max() > 0.1  # it speaks
    voices = list(csv.DictReader(open(root / "voices.csv")))
    assert {v["voice"].split("@")[0] for v in voices} == {"kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"}
    assert len(voices) == 3 * 9  # voice x vocal-tract warp
    splits = {v["speaker"]: v["split"] for v in voices}
    held = {line.split("/")[1].split("_nohash_")[0]: name for name in ("validation", "testing")
            for line in (root / f"{name}_list.txt").read_text().split()}
    assert all(splits[s] == name for s, name in held.items())  # every held-out clip is its speaker's split
    train = {p.name.split("_nohash_")[0] for p in clips} - set(held)
    assert all(splits[s] == "train" for s in train)
    assert "spoken by festival" in (root / "README.md").read_text()


def test_festival_settings_reach_the_voice():
    from apps.speech.prepare import Clip, speak

    def clip(voice, pitch=120, speed=100):
        return Clip("no", "x", 0, voice, pitch=pitch, speed=speed, gain=0.5, offset=0.0, noise=0.0, seed=0)

    def seconds(voice, **kw):
        wav, rate = speak(clip(voice, **kw), "festival")
        return trim_silence(wav, rate).size / rate

    for voice in ("ked_diphone", "cmu_us_slt_arctic_hts"):  # slower speech lasts longer, on both kinds of voice
        assert seconds(voice, speed=80) > 1.15 * seconds(voice, speed=120)
    wav, rate = speak(clip("kal_diphone@1.16"), "festival")
    assert rate == round(16000 * 1.16)  # the warp relabels the rate: formants and pitch move up by 1.16


@pytest.mark.parametrize("engine", ["flite", "festival"])
def test_prepare_cli_and_missing_synthesiser(engine, tmp_path, capsys, monkeypatch):
    out = tmp_path / engine
    assert main(["speech", "prepare", "--engine", engine, "--out", str(out), "--words", "go,no",
                 "--per-word", "3", "--jobs", "1"]) == 0
    assert (out / "go").is_dir() and f"spoken by {engine}" in (out / "README.md").read_text()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["speech", "prepare", "--engine", engine, "--out", str(tmp_path / "x"), "--words", "go",
                 "--per-word", "3"]) == 2
    err = capsys.readouterr().err
    assert f"{engine} is needed" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
