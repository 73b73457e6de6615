"""Several stand-ins at once (``data.root`` as a list) and the recorded-digits probe (``--engine asterisk``)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from apps.common.cli import main
from apps.common.errors import UserError
from apps.common.speech_commands import speech_commands_items
from apps.speech.data import SpeechCommandsData
from apps.speech.prepare import build
from tests.apps.speech.speech_sets import TINY_RECIPE, WORDS, tiny_set

_other: dict[str, object] = {}


def other_set(tmp_path_factory):
    """``WORDS`` spoken by flite, 10 clips each: a second stand-in to merge with the espeak-ng one."""
    if "root" not in _other:
        _other["root"] = tmp_path_factory.mktemp("speech") / "flite"
        build(_other["root"], WORDS, 10, seed=1, jobs=2, noise_seconds=1.0, engine="flite")
    return _other["root"]


def test_several_roots_merge_split_by_split_each_keeping_its_own_lists(tmp_path_factory):
    a, b = tiny_set(tmp_path_factory), other_set(tmp_path_factory)
    data = SpeechCommandsData(root=[str(a), str(b)], words=WORDS)
    for split in ("train", "validation", "test"):
        want = speech_commands_items(a, WORDS, split) + speech_commands_items(b, WORDS, split)
        assert data.dataset(split).items == want
        assert {p.parents[1] for p, _ in want} == {a, b}
    names = {s: {str(p) for p, _ in data.items[s]} for s in data.items}
    assert not names["train"] & (names["validation"] | names["test"])
    single = SpeechCommandsData(root=str(a), words=WORDS)
    assert single.roots == [a] and single.root == a
    assert len(data.background_clips()) == 2 * len(single.background_clips())


def test_several_roots_bad_root_or_word_or_repeat_is_one_clear_line(tmp_path_factory, tmp_path):
    a = tiny_set(tmp_path_factory)
    with pytest.raises(UserError, match=f"data.root not found: {tmp_path / 'nope'}"):
        SpeechCommandsData(root=[str(a), str(tmp_path / "nope")], words=WORDS).setup()
    (tmp_path / "half").mkdir()
    for name in ("validation_list.txt", "testing_list.txt"):
        (tmp_path / "half" / name).write_text("")
    with pytest.raises(UserError, match="word folder .*half/yes not found"):
        SpeechCommandsData(root=[str(a), str(tmp_path / "half")], words=WORDS).setup()
    with pytest.raises(UserError, match="lists a folder twice"):
        SpeechCommandsData(root=[str(a), str(a)], words=WORDS)
    with pytest.raises(UserError, match="a folder or a list of folders"):
        SpeechCommandsData(root=[], words=WORDS)


def test_cli_fits_on_two_roots_given_as_a_yaml_list(tmp_path_factory, tmp_path):
    a, b = tiny_set(tmp_path_factory), other_set(tmp_path_factory)
    code = main(["speech", "fit", "-c", TINY_RECIPE, "--data.root", f"[{a}, {b}]", "--data.words", str(WORDS),
                 "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == 0
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def _fake_digits(folder, rate=8000):
    """0.wav ... 9.wav: 0.4 s tones (a stand-in for the recordings) in 0.1 s of silence, at ``rate``."""
    folder.mkdir()
    t = np.arange(int(0.4 * rate)) / rate
    for d in range(10):
        tone = 0.5 * np.sin(2 * np.pi * (200 + 50 * d) * t)
        soundfile.write(str(folder / f"{d}.wav"), np.concatenate([np.zeros(rate // 10), tone, np.zeros(rate // 10)]),
                        rate, subtype="PCM_16")


def test_asterisk_digits_become_a_test_only_sc09_set(tmp_path, capsys):
    _fake_digits(tmp_path / "digits")
    out = tmp_path / "ast"
    assert main(["speech", "prepare", "--engine", "asterisk", "--source", str(tmp_path / "digits"),
                 "--out", str(out)]) == 0
    assert "one speaker" in capsys.readouterr().out
    items = speech_commands_items(out, "sc09", "test")
    assert [label for _, label in items] == list(range(10))  # one clip of each digit
    for path, label in items:
        wav, rate = soundfile.read(str(path))
        assert rate == 16000 and wav.shape == (16000,)
        loud = np.flatnonzero(np.abs(wav) > 0.05)
        assert 0.38 < (loud[-1] - loud[0]) / 16000 < 0.42  # the 0.4 s tone, silence trimmed
        assert abs((loud[0] + loud[-1]) / 2 - 8000) < 200  # centred
        spectrum = np.abs(np.fft.rfft(wav))  # 1 Hz bins: the tone keeps its frequency through the resampling
        assert abs(int(np.argmax(spectrum)) - (200 + 50 * label)) <= 2  # digit d is d.wav
    assert (out / "validation_list.txt").read_text() == ""
    with pytest.raises(UserError, match="has no readable audio"):
        speech_commands_items(out, "sc09", "train")
    assert "CC-BY-SA-3.0" in (out / "README.md").read_text()


def test_asterisk_errors_are_one_line_and_leave_nothing(tmp_path, capsys):
    assert main(["speech", "prepare", "--engine", "asterisk", "--source", str(tmp_path / "none"),
                 "--out", str(tmp_path / "a")]) == 2
    assert "asterisk-core-sounds-en-wav" in capsys.readouterr().err
    _fake_digits(tmp_path / "digits")
    assert main(["speech", "prepare", "--engine", "asterisk", "--source", str(tmp_path / "digits"),
                 "--out", str(tmp_path / "b"), "--words", "sc10"]) == 2
    assert "the digits only" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
