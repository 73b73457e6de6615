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
from apps.speech.augment import (
    DEFAULT_VIEWS,
    Augmentation,
    View,
    band_gain_db,
    formant_warp,
    levinson,
    log_frequency_gain,
    lpc_envelope,
    parse_views,
    place,
    pulse_train,
    speed_change,
    vocode,
    voicing,
)
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
                       freq_mask=1.0, time_mask=1.0, formant=(0.9, 1.1), vocoder=1.0)
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
    ({"vocoder": 2}, "vocoder is a probability"),
    ({"formant": [1.2, 0.9]}, "formant: \\[lo, hi\\] needs finite lo <= hi and lo > 0"),
    ({"formant": [0.3, 1.0]}, "warp range within \\[0.5, 2\\]"),
    ({"f0": [0, 300]}, "lo > 0"),
    ({"f0": [20, 300]}, "pitch range in Hz within \\[40, 1000\\]"),
    ({"f0": 120}, "f0 takes a range"),
])
def test_config_mistakes_are_one_clear_error(config, message):
    with pytest.raises(UserError, match=message):
        Augmentation.from_config(config)


def _resonator(excitation: torch.Tensor, hz: float, radius: float = 0.97) -> tuple[torch.Tensor, torch.Tensor]:
    """``excitation`` through the two-pole filter 1 / (1 + a1 z^-1 + a2 z^-2) with poles at ``radius``,
    angle 2 pi hz / FS (float64, by the difference equation); returns the output and (1, a1, a2)."""
    a1, a2 = -2 * radius * math.cos(2 * math.pi * hz / FS), radius ** 2
    y = [0.0, 0.0]
    for e in excitation.double().tolist():
        y.append(e - a1 * y[-1] - a2 * y[-2])
    return torch.tensor(y[2:], dtype=torch.float64), torch.tensor([1.0, a1, a2], dtype=torch.float64)


def _envelope_peak_hz(wav: torch.Tensor) -> float:
    env = lpc_envelope(wav)
    return float(env[:, 20:-20].mean(1).argmax()) * FS / 512


def _pitch_hz(wav: torch.Tensor) -> float:
    """The lag of the largest autocorrelation at 2.5-16 ms of the loud middle of ``wav``."""
    x = wav.double()[4000:12000]
    ac = torch.fft.irfft(torch.fft.rfft(x, 2 * x.shape[0]).abs() ** 2)[:x.shape[0]]
    return FS / (40 + int(ac[40:257].argmax()))


def test_levinson_solves_the_normal_equations():
    torch.manual_seed(3)
    x = torch.randn(4, 400, dtype=torch.float64).cumsum(-1)  # strongly coloured
    r = torch.stack([torch.stack([(row[:row.shape[0] - k] * row[k:]).sum() for k in range(9)]) for row in x])
    a = levinson(r, 8)
    for ri, ai in zip(r, a):
        # the normal equations with the documented -90 dB white floor on the diagonal, r0 (1 + 1e-9)
        toeplitz = torch.stack([torch.stack([ri[abs(i - j)] * (1 + 1e-9 * (i == j)) for j in range(1, 9)])
                                for i in range(1, 9)])
        reference = torch.linalg.solve(toeplitz, -ri[1:9])
        torch.testing.assert_close(ai[1:], reference, rtol=1e-8, atol=1e-10)
        assert float(ai[0]) == 1.0
    flat = levinson(torch.zeros(2, 9, dtype=torch.float64), 8)  # silence: a flat envelope, no NaN
    torch.testing.assert_close(flat, torch.eye(1, 9, dtype=torch.float64).expand(2, 9))


def test_lpc_envelope_follows_a_known_resonance():
    torch.manual_seed(4)
    wav, a = _resonator(torch.randn(FS), 1000.0)
    env = lpc_envelope(wav.float())
    assert env.shape == (257, FS // 128 + 1)
    true = 1 / torch.fft.rfft(a, 512).abs() ** 2
    mid = env[:, 20:-20].mean(1)
    # the 20-pole fit to a 2-pole process: same peak, and within 3 dB of the true shape over 200 Hz - 7 kHz
    assert abs(float(mid.argmax()) - float(true.argmax())) <= 1
    band = slice(7, 224)
    db = 10 * torch.log10(mid[band] / mid[band].max()) - 10 * torch.log10(true[band] / true[band].max())
    assert float(db.abs().max()) < 3.0


def test_formant_warp_moves_the_envelope_and_keeps_the_pitch():
    pulses = pulse_train(torch.full((FS,), 125.0))
    wav, _ = _resonator(pulses, 1000.0)
    wav = wav.float()
    torch.testing.assert_close(formant_warp(wav, 1.0), wav)
    for factor in (0.8, 1.25):
        out = formant_warp(wav, factor)
        assert out.shape == wav.shape and bool(torch.isfinite(out).all())
        assert _envelope_peak_hz(out) == pytest.approx(1000 * factor, abs=2 * FS / 512)
        assert _pitch_hz(out) == pytest.approx(125.0, rel=0.02)


def test_pulse_train_and_voicing():
    assert int(pulse_train(torch.full((FS,), 100.0)).sum()) == 100
    rising = pulse_train(torch.linspace(100.0, 200.0, FS))
    assert int(rising.sum()) == 150  # the integral of the contour
    for hz in (70.0, 150.0, 300.0):  # a voice-like periodic frame scores about 1 whatever its period
        voiced, _ = _resonator(pulse_train(torch.full((FS,), hz)), 700.0)
        assert float(voicing(voiced.float())[3:-3].median()) > 0.8
    torch.manual_seed(6)
    hiss, _ = _resonator(torch.randn(FS), 700.0)  # a formant ringing on noise is not voiced
    assert float(voicing(hiss.float()).median()) < 0.35


def test_vocode_gives_the_new_pitch_the_old_envelope_and_energy():
    torch.manual_seed(7)
    wav, _ = _resonator(pulse_train(torch.full((FS,), 100.0)), 1000.0)
    wav = wav.float()
    out = vocode(wav, torch.full((FS,), 200.0), torch.randn(FS))
    assert out.shape == wav.shape and out.dtype == torch.float32
    assert _pitch_hz(wav) == pytest.approx(100.0, rel=0.02) and _pitch_hz(out) == pytest.approx(200.0, rel=0.02)
    assert _envelope_peak_hz(out) == pytest.approx(1000.0, abs=2 * FS / 512)
    assert float(out.pow(2).sum() / wav.pow(2).sum()) == pytest.approx(1.0, abs=0.15)
    # warped and re-excited at once
    assert _envelope_peak_hz(vocode(wav, torch.full((FS,), 200.0), torch.randn(FS), warp=1.2)) == pytest.approx(
        1200.0, abs=2 * FS / 512)
    # an unvoiced clip (noise through the resonator) is re-excited by noise: no pitch appears
    hiss, _ = _resonator(torch.randn(FS), 1000.0)
    again = vocode(hiss.float(), torch.full((FS,), 200.0), torch.randn(FS))
    assert float(voicing(again).median()) < 0.5


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


def test_views_keep_the_length_and_move_what_they_claim():
    t = torch.arange(FS, dtype=torch.float64) / FS
    burst = torch.sin(2 * math.pi * 1000 * t) * torch.exp(-(((t - 0.5) / 0.1) ** 2))  # a tone in the middle
    slower = View("speed", 0.9)(burst)
    assert slower.shape == burst.shape and _peak_hz(slower) == pytest.approx(900, abs=3)
    assert float((slower**2).sum()) == pytest.approx(float((burst**2).sum()) / 0.9, rel=1e-3)  # the loudest second kept
    faster = View("speed", 1.25)(burst)
    energy = faster**2
    assert float((energy * t).sum() / energy.sum()) == pytest.approx(0.5, abs=1e-3)  # padded back, centred
    excitation = pulse_train(torch.full((FS,), 120.0)).double()
    vowel, _ = _resonator(excitation, 1000)
    warped = View("formant", 1.2)(vowel)
    assert warped.shape == vowel.shape and _envelope_peak_hz(warped) == pytest.approx(1200, rel=0.06)
    assert torch.equal(View("formant", 1.0)(vowel), vowel)
    assert str(View("speed", 1.1)) == "speed1.1"


def test_view_lists_parse_and_mistakes_are_one_clear_error():
    assert parse_views(DEFAULT_VIEWS) == (View("speed", 0.9), View("speed", 1.1), View("formant", 0.9),
                                          View("formant", 1.1))
    assert parse_views(" formant1.2 ") == (View("formant", 1.2),)
    for bad in ("pitch1.1", "speed", "speed3", "speedx", ""):
        with pytest.raises(UserError, match=f"--tta: '{bad.strip()}' is not a view: give comma-separated views"):
            parse_views(bad)
    with pytest.raises(UserError, match="repeats a view"):
        parse_views("speed0.9,speed0.90")


def test_evaluation_clips_come_with_their_views_and_training_clips_alone(tmp_path_factory):
    root = tiny_set(tmp_path_factory)
    views = parse_views("speed0.9,formant1.1")
    for features, width in (("raw", 1), ("mfcc", 20)):
        data = SpeechCommandsData(root=str(root), words=WORDS, features=features)
        plain = data.dataset("test")
        data.set_views(views)
        test, train = data.dataset("test"), data.dataset("train")
        x, y = test[0]
        assert x.shape == (3, *plain[0][0].shape) and plain[0][0].shape[-1] == width and y == plain[0][1]
        torch.testing.assert_close(x[0], plain[0][0], rtol=0, atol=0)  # the clip itself first
        wav = plain.waveform(0)
        want = (plain.raw_features(views[0](wav)) - plain.mean) / plain.std
        torch.testing.assert_close(x[1], want.float(), rtol=1e-5, atol=1e-5)
        assert train[0][0].dim() == 2 and next(iter(data.adaptation_loader(4)))[0].dim() == 3
