"""Training-clip augmentations (apps/speech/augment.py) and the low-pass diagnostic of the data module.

Each transform is checked against what it claims in closed form: a sine's frequency after a speed
change, the SNR of added noise, the direct sound and tail energy of a room, the band-pass gain formula.
"""

from __future__ import annotations

import math

import pytest
import torch

from apps.common.cli import main
from apps.common.errors import UserError
from apps.speech.augment import Augmentation, band_gain_db, log_frequency_gain, place, speed_change
from apps.speech.data import SpeechCommandsData
from tests.apps.speech.speech_sets import TINY_RECIPE, WORDS, tiny_set

FS = 16000


def _peak_hz(x: torch.Tensor) -> float:
    return float(torch.fft.rfft(x.double()).abs().argmax()) * FS / x.shape[-1]


def test_speed_change_scales_frequency_and_length_without_aliasing():
    t = torch.arange(FS, dtype=torch.float64) / FS
    sine = torch.sin(2 * math.pi * 1000 * t)
    faster = speed_change(sine, 1.25)
    assert faster.shape[-1] == 12800
    assert _peak_hz(faster) == pytest.approx(1250, abs=1.5)
    slower = speed_change(sine, 0.8)
    assert slower.shape[-1] == 19968 and _peak_hz(slower) == pytest.approx(800 * 20000 / 19968, abs=1.5)
    torch.testing.assert_close(speed_change(sine, 1.0), sine, atol=1e-9, rtol=0)
    # a 7 kHz tone sped up by 1.25 would sit at 8.75 kHz, above Nyquist: it is removed, not folded to 7.25 kHz
    high = speed_change(torch.sin(2 * math.pi * 7000 * t), 1.25)
    assert float(high.abs().max()) < 1e-6


def test_place_pads_at_the_offset_and_crops_the_loudest_window():
    short = torch.ones(100)
    out = place(short, 1000, 0.5)
    assert out.shape[-1] == 1000 and out[450:550].sum() == 100 and out.sum() == 100
    long = torch.zeros(3000)
    long[2000:2100] = 1.0
    window = place(long, 1000, 0.0)
    assert window.sum() == 100  # the burst is kept whole


def test_band_gain_and_tilt_formulas():
    f = torch.tensor([100.0, 200.0, 1000.0, 4000.0, 8000.0])
    torch.testing.assert_close(band_gain_db(f, 200.0, 4000.0), torch.tensor([-48.0, 0.0, 0.0, 0.0, -48.0]))
    torch.testing.assert_close(log_frequency_gain(f, -6.0)[2:], torch.tensor([0.0, -12.0, -18.0]))
    peak = log_frequency_gain(torch.tensor([1000.0, 2000.0]), 0.0, [(1000.0, 9.0, 1.0)])
    torch.testing.assert_close(peak, torch.tensor([9.0, 9.0 * math.exp(-0.5)]))


def test_nothing_drawn_is_the_identity_and_noise_meets_its_snr():
    torch.manual_seed(0)
    x = torch.randn(FS)
    torch.testing.assert_close(Augmentation()(x), x, atol=1e-5, rtol=0)
    noisy = Augmentation(noise=1.0, snr=(20.0, 20.0))(x)
    ratio = float((noisy - x).pow(2).mean() / x.pow(2).mean())
    assert ratio == pytest.approx(0.01, rel=1e-3)
    louder = Augmentation(gain_db=6.0)(x)
    gain = louder / x
    assert float(gain.std()) < 1e-4 and 10 ** (-6 / 20) - 1e-4 <= float(gain.mean()) <= 10 ** (6 / 20) + 1e-4


def test_reverb_keeps_the_direct_sound_and_adds_a_bounded_tail():
    torch.manual_seed(1)
    impulse = torch.zeros(FS)
    impulse[100] = 1.0
    room = Augmentation(reverb=1.0)(impulse)
    assert float(room[:100].abs().max()) < 1e-5  # causal
    assert float(room[100]) == pytest.approx(1.0, abs=1e-5)
    tail = float(room[101:].pow(2).sum())
    assert 10 ** -1.5 - 1e-4 <= tail <= 1.0 + 1e-4  # direct-to-reverberant ratio 0..15 dB


def test_masks_remove_one_band_and_one_stretch():
    torch.manual_seed(2)
    x = torch.randn(FS)
    silenced = Augmentation(time_mask=1.0)(x)
    zero = (silenced == 0).nonzero().flatten()
    assert 0.02 * FS <= zero.numel() <= 0.12 * FS + 1 and int(zero[-1] - zero[0]) + 1 == zero.numel()
    torch.testing.assert_close(silenced[silenced != 0], x[silenced != 0], atol=1e-5, rtol=0)
    banded = Augmentation(freq_mask=1.0)(x)
    ratio = (torch.fft.rfft(banded.double()).abs() / torch.fft.rfft(x.double()).abs()).numpy()
    removed = ratio < 0.1
    assert 0.01 < removed.mean() < 0.5 and (ratio[~removed] > 0.5).mean() > 0.95


def test_same_seed_same_draw_and_every_transform_finite():
    aug = Augmentation(speed=(0.85, 1.15), eq=1.0, band_limit=1.0, reverb=1.0, noise=1.0, gain_db=6.0,
                       freq_mask=1.0, time_mask=1.0)
    x = torch.randn(FS)
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    b = aug(x)
    assert a.shape == (FS,) and a.dtype == torch.float32 and bool(torch.isfinite(a).all())
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, x)


@pytest.mark.parametrize("config, message", [
    ({"sped": [0.9, 1.1]}, "unknown option 'sped'"),
    ({"speed": [1.2, 0.9]}, "lo <= hi"),
    ({"speed": [0.0, 1.0]}, "lo > 0"),
    ({"speed": 1.1}, "takes a range"),
    ({"eq": 1.5}, "probability in \\[0, 1\\]"),
    ({"gain_db": -1}, "dB >= 0"),
    ({"reverb": "lots"}, "takes a number"),
    ("speed", "takes a mapping"),
])
def test_config_mistakes_are_one_clear_error(config, message):
    with pytest.raises(UserError, match=message):
        Augmentation.from_config(config)


def test_data_module_augments_training_clips_only_and_low_passes_on_request(tmp_path_factory):
    root = tiny_set(tmp_path_factory)
    data = SpeechCommandsData(root=str(root), words=WORDS, augment={"speed": [0.8, 0.8]}, normalize=False)
    data.setup("fit")
    train, val = data.dataset("train"), data.dataset("validation")
    assert train.augmentation is not None and val.augmentation is None
    plain = SpeechCommandsData(root=str(root), words=WORDS, normalize=False).dataset("train")
    assert not torch.allclose(train[0][0], plain[0][0])
    low = SpeechCommandsData(root=str(root), words=WORDS, normalize=False, lowpass=2000).dataset("test")
    full = SpeechCommandsData(root=str(root), words=WORDS, normalize=False).dataset("test")
    x, y = low[0][0][:, 0].double(), full[0][0][:, 0].double()
    freqs = torch.fft.rfftfreq(FS, 1 / FS)
    above = lambda w: float((torch.fft.rfft(w).abs() ** 2)[freqs > 2500].sum())  # noqa: E731
    assert above(x) < 1e-3 * above(y)  # the band-limited resampler: 30 dB down past its transition band
    with pytest.raises(UserError, match="data.lowpass"):
        SpeechCommandsData(root=str(root), lowpass=8000)


def test_fit_refuses_an_unknown_augmentation_with_exit_2(tmp_path_factory, tmp_path, capsys):
    root = tiny_set(tmp_path_factory)
    code = main(["speech", "fit", "-c", TINY_RECIPE, "--data.root", str(root), "--data.words", str(WORDS),
                 "--data.augment", "{speed: [0.9, 1.1], reverbb: 0.5}",
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "data.augment: unknown option 'reverbb'" in err[-1]
    assert not (tmp_path / "run").exists()
