"""The Speech Commands loader on a tiny prepared set: splits, labels, padding, resampling, bad files."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import soundfile
import torch
from einops import rearrange

from apps.common.errors import UserError
from apps.common.speech_commands import WORD_SETS, speech_commands_items
from apps.speech.data import SpeechCommandsData, change_rate
from tests.apps.speech.speech_sets import WORDS, copy_of, tiny_set


@pytest.fixture
def tiny(tmp_path_factory):
    return tiny_set(tmp_path_factory)


def test_word_sets():
    assert len(WORD_SETS["sc35"]) == 35 and len(set(WORD_SETS["sc35"])) == 35
    assert WORD_SETS["sc10"][:3] == ["yes", "no", "up"] and WORD_SETS["sc09"][0] == "zero"
    assert set(WORD_SETS["sc10"]) | set(WORD_SETS["sc09"]) <= set(WORD_SETS["sc35"])


def test_split_sizes_and_labels(tiny):
    sizes = {s: len(speech_commands_items(tiny, WORDS, s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 24, "validation": 3, "test": 3}
    reversed_words = WORDS[::-1]
    for path, label in speech_commands_items(tiny, reversed_words, "train"):
        assert reversed_words[label] == path.parent.name
    held = set((tiny / "testing_list.txt").read_text().split())
    assert {f"{p.parent.name}/{p.name}" for p, _ in speech_commands_items(tiny, WORDS, "test")} == held


def test_padding_cropping_and_resampling(tiny, tmp_path, caplog):
    root = copy_of(tiny, tmp_path / "sc")
    t = np.arange(8000) / 16000
    soundfile.write(str(root / "yes" / "short001_nohash_0.wav"), 0.5 * np.sin(2 * np.pi * 440 * t), 16000)
    t44 = np.arange(int(1.5 * 44100)) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 300 * t44), np.zeros_like(t44)], axis=1)
    soundfile.write(str(root / "no" / "long0002_nohash_0.wav"), stereo, 44100)
    data = SpeechCommandsData(root=str(root), words=WORDS, normalize=False)
    data.setup("fit")
    ds = data.dataset("train")
    names = [p.name for p, _ in ds.items]
    with caplog.at_level(logging.WARNING):
        short, label = ds[names.index("short001_nohash_0.wav")]
        long_, _ = ds[names.index("long0002_nohash_0.wav")]
    assert short.shape == long_.shape == (16000, 1) and label == 0
    assert torch.all(short[8000:] == 0) and short[:8000].abs().max() > 0.4
    assert "converting 2ch@44100 audio" in caplog.text and "long0002" in caplog.text
    assert long_[:, 0].abs().max() == pytest.approx(0.25, abs=0.02)  # stereo averaged: half amplitude


def test_rate_change_proper_filters_naive_aliases():
    t = torch.arange(16000, dtype=torch.float64) / 16000
    tone = torch.sin(2 * math.pi * 6000 * t)  # above the 4 kHz Nyquist of 8 kHz audio
    proper, naive = change_rate(tone, 8000, "proper"), change_rate(tone, 8000, "naive")
    assert proper.shape == naive.shape == (8000,)
    assert torch.equal(naive, tone[::2])
    assert proper[100:-100].abs().max() < 0.05 and naive.abs().max() > 0.9  # low-passed away vs aliased to 2 kHz
    with pytest.raises(UserError, match="naive decimation"):
        change_rate(tone, 12000, "naive")


def test_data_module_rates_features_and_normalisation(tiny):
    full = SpeechCommandsData(root=str(tiny), words=WORDS)
    full.setup("fit")
    x = torch.stack([full.dataset("train")[i][0] for i in range(24)])
    assert x.shape == (24, 16000, 1)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05  # normalised by training statistics
    half = SpeechCommandsData(root=str(tiny), words=WORDS, sample_rate=8000, resample="naive", normalize=False)
    half.setup("test")
    raw = SpeechCommandsData(root=str(tiny), words=WORDS, normalize=False)
    raw.setup("test")
    assert torch.equal(half.dataset("test")[0][0], raw.dataset("test")[0][0][::2])
    assert float(full.normalization()[1]) == pytest.approx(float(half.normalization()[1]))  # 16 kHz statistics
    mfcc = SpeechCommandsData(root=str(tiny), words=WORDS, features="mfcc", n_mfcc=13)
    mfcc.setup("test")
    assert mfcc.dataset("test")[0][0].shape == (101, 13) and mfcc.d_input == 13


def test_mfcc_cmn_removes_a_fixed_channel(tiny):
    """A fixed gain per mel band (a microphone or a voice colouring) adds the same vector to every frame's cepstrum:
    ``mfcc_cmn`` subtracts the clip's mean over its louder frames, so the channel is gone where the word is."""
    from apps.speech.data import cepstral_mean_removed

    data = SpeechCommandsData(root=str(tiny), words=WORDS, features="mfcc_cmn", normalize=False)
    data.setup("test")
    ds = data.dataset("test")
    assert data.d_input == 20
    wav = ds.waveform(0)
    x = ds.raw_features(wav)
    loud = x[:, 0] >= x[:, 0].median()
    assert x.shape == (101, 20) and torch.allclose(x[loud].mean(0), torch.zeros(20), atol=1e-4)
    plain = rearrange(ds.mfcc(wav), "c t -> t c")
    channel = torch.linspace(-3, 3, 20)  # any constant cepstral offset
    assert torch.allclose(cepstral_mean_removed(plain + channel), x, atol=1e-3)
    with pytest.raises(UserError, match="choose raw, mfcc or mfcc_cmn"):
        SpeechCommandsData(root=str(tiny), words=WORDS, features="mfcc_cms")


def test_background_noise_augments_training_clips_only(tiny):
    quiet = SpeechCommandsData(root=str(tiny), words=WORDS, normalize=False)
    noisy = SpeechCommandsData(root=str(tiny), words=WORDS, normalize=False, background_noise=1.0, noise_level=0.5)
    quiet.setup("fit")
    noisy.setup("fit")
    assert len(noisy.background_clips()) == 4
    assert not torch.equal(quiet.dataset("train")[0][0], noisy.dataset("train")[0][0])
    assert torch.equal(quiet.dataset("validation")[0][0], noisy.dataset("validation")[0][0])


def test_adaptation_clips_are_spread_over_the_split_and_never_augmented(tiny):
    data = SpeechCommandsData(root=str(tiny), words=WORDS, normalize=False, background_noise=1.0, noise_level=0.5,
                              augment={"gain_db": 6}, batch_size=4)
    data.setup("fit")
    train = data.items["train"]  # 24 clips, 8 per word, word by word
    loader = data.adaptation_loader(6)
    x = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    assert x.shape[0] == 6 and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]  # every word, not the first one's
    assert torch.equal(x, torch.cat([x for x, _ in data.adaptation_loader(6)]))  # no noise, no augmentation
    assert torch.equal(x[0], data._dataset([train[0]])[0][0])
    assert sum(len(b[0]) for b in data.adaptation_loader(1000)) == len(train)
    whole = data.dataset("all")  # every clip of the folder, never augmented
    assert len(whole) == sum(len(data.dataset(s)) for s in ("train", "validation", "test"))
    assert torch.equal(whole[0][0], whole[0][0]) and torch.equal(whole[0][0], x[0])


def test_corrupt_and_empty_files_are_skipped_with_a_warning(tiny, tmp_path, caplog):
    root = copy_of(tiny, tmp_path / "sc")
    (root / "up" / "deadbeef_nohash_0.wav").write_bytes(b"RIFF not really a wave file")
    soundfile.write(str(root / "up" / "e0e0e0e0_nohash_0.wav"), np.zeros(0), 16000)
    with caplog.at_level(logging.WARNING):
        items = speech_commands_items(root, WORDS, "train")
    assert len(items) == 24
    assert "deadbeef_nohash_0.wav" in caplog.text and "e0e0e0e0_nohash_0.wav" in caplog.text
    for line in (root / "testing_list.txt").read_text().split():
        (root / line).write_bytes(b"")
    with pytest.raises(UserError, match="testing split .* has no readable audio"):
        speech_commands_items(root, WORDS, "test")


def test_layout_mistakes_are_one_line_errors(tiny, tmp_path):
    with pytest.raises(UserError, match="data.root not found"):
        speech_commands_items(tmp_path / "nowhere", WORDS, "train")
    with pytest.raises(UserError, match="word folder .*marvin"):
        speech_commands_items(tiny, ["yes", "marvin"], "train")
    with pytest.raises(UserError, match="validation_list.txt not found"):
        speech_commands_items(tmp_path, WORDS, "train")
    with pytest.raises(UserError, match="unknown word set"):
        SpeechCommandsData(root=str(tiny), words="sc11")
    with pytest.raises(UserError, match="quote yes / no"):
        SpeechCommandsData(root=str(tiny), words=[True, False, "up"])
