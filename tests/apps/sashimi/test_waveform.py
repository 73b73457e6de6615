"""Waveform data: the quantisation round-trip, the chunker, and WaveformData on folders of WAVs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from apps.common.audio import save_wav
from apps.common.errors import UserError
from apps.sashimi.waveform import WaveformData, chunk, dequantize, quantize, silence_level


@pytest.mark.parametrize("method", ["mu-law", "linear"])
def test_levels_survive_the_round_trip(method):
    q = torch.arange(256)
    assert torch.equal(quantize(dequantize(q, method), method), q)


@pytest.mark.parametrize("method", ["mu-law", "linear"])
def test_waveform_round_trip_is_within_half_a_level(method):
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    y = dequantize(quantize(x.float(), method), method).double()
    if method == "linear":
        assert (y - x).abs().max() <= 1 / 255 + 1e-6
    else:  # half a level in the companded domain
        mu = 255.0
        compand = lambda v: torch.sign(v) * torch.log1p(mu * v.abs()) / math.log1p(mu)  # noqa: E731
        assert (compand(y) - compand(x)).abs().max() <= 1 / 255 + 1e-5
        # mu-law spends its levels on quiet samples: small amplitudes come back much finer than linear
        quiet = x.abs() < 0.01
        assert (y - x)[quiet].abs().max() < 4e-4  # linear: up to 1 / 255 = 3.9e-3


def test_mu_law_matches_the_g711_style_formula():
    assert int(quantize(torch.tensor(-1.0))) == 0 and int(quantize(torch.tensor(1.0))) == 255
    assert silence_level("mu-law") == 128 and silence_level("linear") == 128
    x = torch.tensor([0.5])
    expected = round((math.log1p(255 * 0.5) / math.log1p(255) + 1) / 2 * 255)
    assert int(quantize(x)) == expected
    assert torch.all(quantize(torch.tensor([-3.0, 3.0])) == torch.tensor([0, 255]))  # clipped


def test_chunker_pads_or_drops_the_last_piece():
    wav = torch.arange(1, 11, dtype=torch.float32)  # 10 samples
    pieces, mask = chunk(wav, 4, "pad")
    assert pieces.shape == (3, 4) and mask.shape == (3, 4)
    assert torch.equal(pieces[2], torch.tensor([9.0, 10.0, 0.0, 0.0]))
    assert mask.sum() == 10 and not mask[2, 2:].any()
    assert torch.equal(pieces.flatten()[:10], wav)
    pieces, mask = chunk(wav, 4, "drop")
    assert pieces.shape == (2, 4) and mask.all()
    assert chunk(wav[:3], 4, "drop")[0].shape == (0, 4)
    assert chunk(wav[:3], 4, "pad")[1].sum() == 3
    with pytest.raises(UserError, match="data.last"):
        chunk(wav, 4, "wrap")


def _tone(seconds: float, rate: int, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_folder_layout_resamples_chunks_and_masks(tmp_path):
    import soundfile

    for split, n in {"train": 2, "val": 1, "test": 1}.items():
        for i in range(n):
            (tmp_path / split).mkdir(exist_ok=True)  # 8 kHz stereo in, 16 kHz mono out
            soundfile.write(tmp_path / split / f"{i}.wav", _tone(0.3, 8000, 440.0, channels=2), 8000)
    data = WaveformData(root=str(tmp_path), segment_length=1000, last="pad", batch_size=3)
    data.setup("fit")
    assert len(data.sets["train"]) == 2 * 5 and len(data.sets["val"]) == 5  # 4800 samples -> 5 chunks each
    tokens, mask = next(iter(data.train_dataloader()))
    assert tokens.shape == (3, 1000) and tokens.dtype == torch.long and mask.dtype == torch.bool
    assert 0 <= tokens.min() and tokens.max() < 256
    last_tokens, last_mask = data.sets["val"][4]
    assert last_mask.sum() == 800 and torch.all(last_tokens[800:] == 128)  # padding is silence


def test_flat_folder_is_split_by_fraction_and_linear_works(tmp_path):
    for i in range(10):
        save_wav(tmp_path / f"clip{i}.wav", torch.from_numpy(_tone(0.1, 16000, 200.0 + 50 * i)), 16000)
    data = WaveformData(root=str(tmp_path), segment_length=800, last="drop", quantization="linear",
                        val_fraction=0.2, test_fraction=0.1)
    files = data.split_files()
    assert [len(files[s]) for s in ("train", "val", "test")] == [7, 2, 1]
    assert not set(files["train"]) & set(files["val"])
    data.setup()
    assert len(data.sets["train"]) == 7 * 2


def test_missing_or_empty_root_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="prepare piano"):
        WaveformData(root=str(tmp_path / "nope")).split_files()
    with pytest.raises(UserError, match="no audio files"):
        WaveformData(root=str(tmp_path)).split_files()
    with pytest.raises(UserError, match="data.quantization"):
        WaveformData(quantization="alaw")


def test_sc09_reads_only_the_digits_of_the_speech_commands_layout(tmp_path):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "yes"]
    val, test = [], []
    for w_i, word in enumerate(words):
        for i in range(3):
            save_wav(tmp_path / word / f"spk{i}_nohash_0.wav", torch.from_numpy(_tone(0.5, 16000, 200.0 + 30 * w_i)),
                     16000)
        val.append(f"{word}/spk1_nohash_0.wav")
        test.append(f"{word}/spk2_nohash_0.wav")
    (tmp_path / "validation_list.txt").write_text("\n".join(val) + "\n")
    (tmp_path / "testing_list.txt").write_text("\n".join(test) + "\n")
    data = WaveformData(root=str(tmp_path), dataset="sc09", segment_length=16000, last="pad")
    files = data.split_files()
    assert [len(files[s]) for s in ("train", "val", "test")] == [10, 10, 10]  # "yes" is not a digit
    assert all("yes" not in str(f) for split in files.values() for f in split)
    data.setup()
    tokens, mask = data.sets["train"][0]
    assert tokens.shape == (16000,) and mask.sum() == 8000  # one 1 s example per clip, padded
