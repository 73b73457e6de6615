"""The rule-based formant synthesiser (``--engine klatt``): Klatt's filters, the phones' acoustics, the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile

from apps.common.cli import main
from apps.common.speech_commands import WORD_SETS
from apps.speech import klatt
from tests.apps.speech.speech_sets import built_twice


def _klatt_coefficients(f: float, bw: float, rate: int = 16000) -> tuple[float, float, float]:
    """Klatt (1980), eqs. for a digital resonator: C = -exp(-2 pi BW T), B = 2 exp(-pi BW T) cos(2 pi F T)."""
    T = 1.0 / rate
    c = -np.exp(-2 * np.pi * bw * T)
    b = 2 * np.exp(-np.pi * bw * T) * np.cos(2 * np.pi * f * T)
    return 1 - b - c, b, c


def test_resonator_is_klatts_difference_equation_with_coefficients_per_frame():
    rng = np.random.default_rng(0)
    frames = 12
    x = rng.standard_normal(frames * klatt.FRAME)
    f, bw, gain = rng.uniform(200, 5000, frames), rng.uniform(40, 400, frames), rng.uniform(0.5, 2, frames)
    y = np.zeros(x.size + 2)  # y[k + 2] is output k; two zeros before the start
    for n in range(x.size):
        a, b, c = _klatt_coefficients(f[n // klatt.FRAME], bw[n // klatt.FRAME])
        y[n + 2] = gain[n // klatt.FRAME] * a * x[n] + b * y[n + 1] + c * y[n]
    np.testing.assert_allclose(klatt.resonate(x, f, bw, gain=gain), y[2:], rtol=1e-10, atol=1e-12)


def test_antiresonator_undoes_the_resonator():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(6 * klatt.FRAME)
    f, bw = np.full(6, 450.0), np.full(6, 100.0)
    np.testing.assert_allclose(klatt.antiresonate(klatt.resonate(x, f, bw), f, bw), x, atol=1e-9)


@pytest.mark.parametrize("f, bw", [(500.0, 60.0), (1500.0, 90.0), (3000.0, 200.0)])
def test_resonator_peaks_at_its_frequency_with_its_bandwidth(f, bw):
    n = 64 * klatt.FRAME
    impulse = np.zeros(n)
    impulse[0] = 1.0
    gain = klatt.peak_gain(np.array([f]), np.array([bw]))
    h = klatt.resonate(impulse, np.full(64, f), np.full(64, bw), gain=np.full(64, gain[0]))
    spectrum = np.abs(np.fft.rfft(h, 16 * n))
    freqs = np.fft.rfftfreq(16 * n, 1 / 16000)
    assert abs(freqs[spectrum.argmax()] - f) < 0.05 * bw
    assert abs(spectrum.max() - 1) < 0.02  # peak_gain normalises the peak to 1
    above = freqs[spectrum >= spectrum.max() / np.sqrt(2)]
    assert abs((above.max() - above.min()) - bw) < 0.1 * bw  # the -3 dB width is the bandwidth


def _segment(word: str, voice: str, phone: str, pitch: float = 120.0):
    """``word`` rendered for ``voice``, and the samples of ``phone``'s middle (edges of 15 ms left out)."""
    v = klatt.voice(voice)
    rng = np.random.default_rng(3)
    segs = klatt.pronounce(word, v)
    klatt.durations(segs, tempo=1.0)
    wav = klatt.render(klatt.tracks(segs, v, pitch, rng), v, rng)
    s = next(s for s in segs if s.phone == phone)
    return wav[int((s.start + 0.015) * klatt.RATE):int((s.end - 0.015) * klatt.RATE)]


def _band_share(x: np.ndarray, lo: float, hi: float) -> float:
    p = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / klatt.RATE)
    return float(p[(f >= lo) & (f < hi)].sum() / p.sum())


@pytest.mark.parametrize("voice", ["klatt-000", "klatt-001"])
def test_phones_have_their_acoustics(voice):
    # /iy/ (three) is front: energy at F2 ~2.3 kHz; /uw/ (two) is back: F2 ~1 kHz, nothing near 2.3 kHz
    iy, uw = _segment("three", voice, "IY"), _segment("two", voice, "UW")
    assert _band_share(iy, 1800, 3200) > 5 * _band_share(uw, 1800, 3200)
    assert _band_share(uw, 0, 1500) > 0.9
    # /s/ is frication above 4 kHz, /sh/ lower; both far weaker below 1 kHz than a vowel
    s, sh = _segment("six", voice, "S"), _segment("sheila", voice, "SH")
    assert _band_share(s, 4000, 8000) > 0.8
    assert _band_share(sh, 2000, 4500) > _band_share(s, 2000, 4500)
    assert _band_share(s, 0, 1000) < 0.01 and _band_share(sh, 0, 1000) < 0.01
    # the vowel is louder than the fricative
    assert np.sqrt(np.mean(iy ** 2)) > 2 * np.sqrt(np.mean(s ** 2))


def test_voices_differ_in_vocal_tract_and_pitch():
    voices = [klatt.voice(f"klatt-{i:03d}") for i in range(klatt.VOICES)]
    scales = np.array([v.scale for v in voices])
    assert scales.min() < 1.0 and scales.max() > 1.24  # men to children
    # a larger scale (a shorter vocal tract) moves /iy/'s F2 region up
    small, large = min(range(40), key=lambda i: scales[i]), max(range(40), key=lambda i: scales[i])
    # /aa/'s F1 (750 Hz x scale x the accent's shift), both voices at F0 100 Hz so that harmonics are dense
    lo, hi = (_first_formant(_segment("stop", f"klatt-{i:03d}", "AA", pitch=100 / voices[i].pitch_scale))
              for i in (small, large))
    ratio = scales[large] / scales[small]
    assert ratio > 1.3 and abs(hi / lo / ratio - 1) < 0.15
    f0 = [_pitch(_segment("no", f"klatt-{i:03d}", "OW", pitch=120)) for i in (small, large)]
    pitch = [voices[i].pitch_scale * 120 for i in (small, large)]
    np.testing.assert_allclose(f0, pitch, rtol=0.25)  # the voice's own pitch, through the rise and fall


def _pitch(x: np.ndarray) -> float:
    """The median over 50 ms windows of the autocorrelation peak between 60 and 400 Hz."""
    f0 = []
    for w in np.split(x[:x.size // 800 * 800], x.size // 800):
        ac = np.correlate(w, w, "full")[w.size - 1:]
        f0.append(klatt.RATE / (40 + int(np.argmax(ac[40:267]))))
    return float(np.median(f0))


def _first_formant(x: np.ndarray) -> float:
    """The lowest resonance above 300 Hz of an order-18 all-pole fit (autocorrelation method), in Hz."""
    from scipy.linalg import solve_toeplitz

    w = np.diff(x) * np.hanning(x.size - 1)
    r = np.correlate(w, w, "full")[w.size - 1:w.size + 19]
    a = solve_toeplitz(r[:18], r[1:19])
    roots = np.roots(np.concatenate([[1], -a]))
    roots = roots[(roots.imag > 0) & (np.abs(roots) > 0.9)]
    freqs = np.sort(np.angle(roots) * klatt.RATE / (2 * np.pi))
    return float(freqs[freqs > 300][0])


def test_every_word_speaks_deterministically():
    lengths = []
    for word in WORD_SETS["sc35"]:
        a = klatt.say(word, "klatt-007", pitch=130, speed=100, seed=5)
        assert a.dtype == np.float32 and np.isfinite(a).all() and abs(np.abs(a).max() - 0.9) < 1e-6
        lengths.append(a.size / klatt.RATE)
    assert 0.2 < min(lengths) and max(lengths) < 1.0
    a = klatt.say("seven", "klatt-007", pitch=130, speed=100, seed=5)
    np.testing.assert_array_equal(a, klatt.say("seven", "klatt-007", pitch=130, speed=100, seed=5))
    assert not np.array_equal(a, klatt.say("seven", "klatt-007", pitch=130, speed=100, seed=6))
    slow = klatt.say("seven", "klatt-007", pitch=130, speed=80, seed=5)
    assert slow.size > 1.15 * a.size


def test_stand_in_layout_and_cli(tmp_path, capsys):
    root = built_twice(tmp_path, "klatt")  # 8 clips, the same bytes at 1 and 2 jobs
    for clip in sorted(root.glob("*/*_nohash_*.wav")):
        wav, rate = soundfile.read(str(clip))
        assert (rate, wav.shape) == (16000, (16000,)) and np.abs(wav).max() > 0.1
    voices = list(csv.DictReader(open(root / "voices.csv")))
    assert len(voices) == klatt.VOICES and {v["voice"][:6] for v in voices} == {"klatt-"}
    assert "spoken by klatt" in (root / "README.md").read_text()
    out = tmp_path / "cli"
    assert main(["speech", "prepare", "--engine", "klatt", "--out", str(out), "--words", "sc09",
                 "--per-word", "3", "--jobs", "1"]) == 0
    assert "wrote 30 clips of 10 words" in capsys.readouterr().out
    assert main(["speech", "prepare", "--engine", "klatt", "--out", str(tmp_path / "x"), "--words", "go,hello",
                 "--per-word", "3"]) == 2
    err = capsys.readouterr().err
    assert "klatt has no pronunciation for hello" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
