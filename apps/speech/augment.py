"""Waveform augmentations that give a speech classifier the variety one synthesiser lacks.

A model trained on one synthetic voice family learns the synthesiser: on the espeak-ng stand-in the
SC10 CPU recipe scores 98% in-domain and about 50% on the same words spoken by Flite.  Real Speech
Commands clips differ from each other in ways a synthesiser's do not: speakers' vocal tracts and
speaking rates, microphones and rooms, band limits of phones and codecs, background noise, level.
:class:`Augmentation` draws each of these at random per training clip, on a one-second 16 kHz
waveform, all in the frequency domain (a few FFTs of 32k points per clip):

- ``speed``: a resampling factor ``f`` drawn from ``[lo, hi]``; the clip plays ``f`` times faster, so
  pitch and formants scale by ``f`` (a vocal-tract and rate perturbation, as Kaldi's speed
  perturbation), band-limited (the spectrum is cut, never aliased).
- ``eq``: with this probability, a random microphone: a spectral tilt of -6..+3 dB per octave about
  1 kHz and two peaks or notches of up to +-10 dB, 0.3-1.5 octaves wide.
- ``band_limit``: with this probability, a phone-like band: a low-pass at 3-7.5 kHz and a high-pass
  at 50-400 Hz, each rolling off at 48 dB per octave.
- ``reverb``: with this probability, a room: an exponentially decaying noise tail (RT60 0.1-0.6 s)
  behind the direct sound, at a direct-to-reverberant ratio of 0-15 dB.
- ``noise``: with this probability, coloured noise (a random tilt of white noise) at an SNR drawn
  from ``snr`` (dB).
- ``gain_db``: a level change uniform in +-``gain_db``.
- ``formant``: a vocal-tract warp ``a`` drawn from ``[lo, hi]``: each frame's all-pole (LPC) envelope is
  stretched along frequency, ``env(f / a)`` (``a`` > 1 moves the formants up, as a shorter vocal tract),
  while pitch, duration and the excitation stay (unlike ``speed``, which moves them together).
- ``vocoder``: with this probability, the clip is re-excited as a vocoder or a phone codec would: its
  LPC envelope drives a pulse train at a new pitch (``f0`` Hz, log-uniform in ``[lo, hi]``, gliding up
  or down by up to 4 semitones over the second) mixed with noise frame by frame in the proportion of the
  clip's own voicing, and every frame keeps its energy (``formant``'s warp, when drawn, is applied to
  that envelope).  The synthesiser's own glottal source, pitch
  and jitter are gone; the words' spectral envelopes are kept.
- ``freq_mask``: with this probability, a band 0.25-1 octave wide somewhere in 150 Hz-7 kHz is
  removed, and ``time_mask``: with this probability, 20-120 ms of the clip are silenced (SpecAugment's
  masks, Park et al. 2019, on the waveform), so that no single cue decides a word.

Filters are zero-phase gains on the spectrum; ``formant`` and ``vocoder`` work on 32 ms Hann frames
(hop 8 ms) with a 20-pole envelope per frame (autocorrelation method, Levinson-Durbin recursion), and
the voicing is that of the frame's LPC residual.  Everything uses the global ``torch`` random state,
which Lightning seeds per worker, so a seeded run draws the same augmentations.

Measured (benchmarks/README.md, "Why held-out espeak-ng stays far"): ``vocoder: 0.5`` with
``formant: [0.85, 1.15]`` on top of the robust set lifts an SC10 model trained on espeak-ng + flite
from 86.6% to 91.0% on festival (SC09: 95.2% to 97.3%), and leaves models trained on flite +
festival as far from espeak-ng as before.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from apps.common.errors import UserError

SAMPLE_RATE = 16000
RANGES = ("speed", "snr", "formant", "f0")


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _chance(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


def speed_change(wav: Tensor, factor: float) -> Tensor:
    """``wav`` (T,) played about ``factor`` times faster at the same sample rate, band-limited.

    The output has T / ``factor`` samples rounded to a multiple of 64 (the factor actually applied is
    T / that).

    The spectrum is truncated (``factor`` > 1) or zero-padded (< 1), so nothing aliases.
    """
    n = wav.shape[-1]
    m = max(64, 64 * round(n / factor / 64))  # a length with small factors keeps the inverse FFT fast
    spec = torch.fft.rfft(wav, n=n)
    k = m // 2 + 1
    spec = spec[..., :k] if spec.shape[-1] >= k else torch.nn.functional.pad(spec, (0, k - spec.shape[-1]))
    return torch.fft.irfft(spec, n=m) * (m / n)


def place(wav: Tensor, length: int, offset: float) -> Tensor:
    """Fit ``wav`` (T,) into ``length`` samples: pad at a relative ``offset`` in [0, 1] of the free room,
    or crop the window of ``length`` that holds the most energy."""
    n = wav.shape[-1]
    if n <= length:
        start = int(offset * (length - n))
        return torch.nn.functional.pad(wav, (start, length - n - start))
    energy = torch.nn.functional.pad((wav.double() ** 2).cumsum(-1), (1, 0))
    start = int(torch.argmax(energy[length:] - energy[:-length]))
    return wav[start:start + length]


def log_frequency_gain(freqs: Tensor, tilt_db_per_octave: float,
                       peaks: Sequence[tuple[float, float, float]] = ()) -> Tensor:
    """A gain curve in dB over ``freqs`` (Hz): a tilt about 1 kHz plus Gaussian peaks
    ``(centre Hz, gain dB, width in octaves)`` on a log-frequency axis."""
    octaves = torch.log2(freqs.clamp_min(20.0) / 1000.0)
    db = tilt_db_per_octave * octaves
    for centre, gain, width in peaks:
        db = db + gain * torch.exp(-0.5 * ((octaves - math.log2(centre / 1000.0)) / width) ** 2)
    return db


def band_gain_db(freqs: Tensor, low_cut: float, high_cut: float, slope_db_per_octave: float = 48.0) -> Tensor:
    """The gain in dB of a band-pass from ``low_cut`` to ``high_cut`` Hz with the given roll-off slopes."""
    f = freqs.clamp_min(1.0)
    above = torch.log2(f / high_cut).clamp_min(0.0)
    below = torch.log2(low_cut / f).clamp_min(0.0) if low_cut > 0 else torch.zeros_like(f)
    return -slope_db_per_octave * (above + below)


LPC_ORDER = 20
FRAME = 512
HOP = 128


def _stft(wav: Tensor) -> Tensor:
    return torch.stft(wav, FRAME, HOP, window=torch.hann_window(FRAME, dtype=wav.dtype), return_complex=True)


def _istft(spec: Tensor, length: int) -> Tensor:
    return torch.istft(spec, FRAME, HOP, window=torch.hann_window(FRAME, dtype=spec.real.dtype), length=length)


def power_spectra(wav: Tensor) -> Tensor:
    """Per frame of :func:`torch.stft` (``FRAME``-point Hann window, hop ``HOP``, centred), the power
    spectrum zero-padded to 2 ``FRAME`` points, (FRAME + 1, frames): its inverse FFT is the frame's
    linear autocorrelation, no lag wrapping around."""
    spec = torch.stft(wav.float(), 2 * FRAME, HOP, win_length=FRAME, window=torch.hann_window(FRAME),
                      return_complex=True)
    return spec.abs() ** 2


def autocorrelation(power: Tensor) -> Tensor:
    """Lags 0..FRAME - 1 of each frame's autocorrelation, (frames, FRAME), from :func:`power_spectra`."""
    return torch.fft.irfft(power, 2 * FRAME, dim=0)[:FRAME].T


def levinson(r: Tensor, order: int) -> Tensor:
    """Prediction-error filter ``a`` (..., order + 1), ``a[0] = 1``, from autocorrelations ``r`` (..., > order).

    Solves the Toeplitz normal equations sum_j a_j r_|i-j| = 0 (i = 1..order) by the Levinson-Durbin
    recursion, with ``r[0]`` raised by a factor 1 + 1e-9 (a -90 dB white floor that keeps it stable); a
    zero-energy frame gives ``a = (1, 0, ...)`` (a flat envelope).
    """
    r = r.double()
    a = torch.zeros(*r.shape[:-1], order + 1, dtype=torch.float64)
    a[..., 0] = 1.0
    err = r[..., 0] * (1 + 1e-9) + 1e-30  # a -90 dB white floor keeps the recursion stable
    for i in range(1, order + 1):
        k = -(a[..., :i] * r[..., 1:i + 1].flip(-1)).sum(-1) / err
        a = a.clone()
        a[..., 1:i + 1] = a[..., 1:i + 1] + k[..., None] * a[..., :i].flip(-1)
        err = err * (1 - k ** 2)
    return a


def lpc_filters(power: Tensor, order: int = LPC_ORDER) -> Tensor:
    """Each frame's prediction-error filter ``a`` (frames, order + 1) from its :func:`power_spectra`."""
    return levinson(autocorrelation(power)[:, :order + 1], order)


def lpc_envelope(wav: Tensor, order: int = LPC_ORDER, a: Tensor | None = None) -> Tensor:
    """The all-pole power envelope ``1 / |A(e^jw)|^2`` (FRAME / 2 + 1, frames) of each frame of ``wav`` (T,),
    on the frequency grid and frames of :func:`torch.stft` with a ``FRAME``-point Hann window, hop ``HOP``
    (``a``: the clip's :func:`lpc_filters`, when already computed).

    Only its shape over frequency is meaningful (the gain is left out)."""
    a = lpc_filters(power_spectra(wav), order) if a is None else a
    return (1.0 / torch.fft.rfft(a, FRAME).abs().clamp_min(1e-6) ** 2).T


def _warp(env: Tensor, factor: float) -> Tensor:
    """``env`` (bins, frames) moved along frequency: ``env(f / factor)``, linear between bins, the top
    bin's value beyond Nyquist."""
    bins = torch.arange(env.shape[0], dtype=torch.float64) / factor
    lo = bins.floor().long().clamp(max=env.shape[0] - 1)
    hi = (lo + 1).clamp(max=env.shape[0] - 1)
    w = (bins - lo).clamp(0, 1)[:, None]
    return env[lo] * (1 - w) + env[hi] * w


def formant_warp(wav: Tensor, factor: float) -> Tensor:
    """``wav`` (T,) with every frame's LPC envelope moved along frequency, ``env(f / factor)``; the
    excitation (the frame's spectrum divided by its envelope), pitch and length are kept."""
    if factor == 1.0:
        return wav
    env = lpc_envelope(wav)
    gain = (_warp(env, factor) / env).clamp(1e-4, 1e4).sqrt()
    return _istft(_stft(wav.double()) * gain, wav.shape[-1]).to(wav.dtype)


VIEW_KINDS = ("speed", "formant")
#: ``ssm speech zero-shot --tta``'s default views besides the clip itself
DEFAULT_VIEWS = "speed0.9,speed1.1,formant0.9,formant1.1"


@dataclass(frozen=True)
class View:
    """One test-time view of a clip (test-time augmentation): the clip played ``factor`` times as fast (``speed``,
    :func:`speed_change`, back in the clip's length: padded evenly when shorter, its loudest stretch when longer) or with every formant moved by ``factor``
    (``formant``, :func:`formant_warp`: pitch, duration and excitation kept)."""

    kind: str
    factor: float

    def __call__(self, wav: Tensor) -> Tensor:
        """``wav`` (T,) -> its view (T,)."""
        if self.kind == "speed":
            return place(speed_change(wav, self.factor), wav.shape[-1], 0.5)
        return formant_warp(wav, self.factor)

    def __str__(self) -> str:
        return f"{self.kind}{self.factor:g}"


def parse_views(text: str, option: str = "--tta") -> tuple[View, ...]:
    """``"speed0.9,formant1.1"`` -> the views, in order: each a kind (speed or formant) and a factor in [0.5, 2]."""
    views = []
    for token in (t.strip() for t in text.split(",")):
        kind = next((k for k in VIEW_KINDS if token.startswith(k)), None)
        try:
            factor = float(token[len(kind):]) if kind else math.nan
        except ValueError:
            factor = math.nan
        if not 0.5 <= factor <= 2:
            raise UserError(f"{option}: {token!r} is not a view: give comma-separated views such as {DEFAULT_VIEWS} "
                            "(speed or formant followed by a factor in [0.5, 2])")
        views.append(View(kind, factor))
    if len(set(views)) != len(views):
        raise UserError(f"{option}: {text!r} repeats a view; give each once")
    return tuple(views)


def voicing(wav: Tensor, f0_range: tuple[float, float] = (60.0, 400.0), power: Tensor | None = None,
            a: Tensor | None = None) -> Tensor:
    """Per frame (as :func:`torch.stft`'s), how periodic the LPC residual is: the largest normalised
    autocorrelation of the whitened frame (its spectrum times ``|A|^2``) at a lag in the pitch range,
    divided by the Hann window's own normalised autocorrelation at that lag (Boersma 1993), so that a
    periodic frame scores about 1 whatever its period and a formant ringing on noise does not count:
    near 1 voiced, near 0 noise (``power``, ``a``: the clip's :func:`power_spectra` and :func:`lpc_filters`)."""
    power = power_spectra(wav) if power is None else power
    a = lpc_filters(power) if a is None else a
    r = autocorrelation(power * (torch.fft.rfft(a, 2 * FRAME).abs() ** 2).T.float())
    lo, hi = int(SAMPLE_RATE / f0_range[1]), int(SAMPLE_RATE / f0_range[0])
    window = autocorrelation_of_window()[lo:hi + 1]
    return (r[:, lo:hi + 1] / r[:, :1].clamp_min(1e-30) / window).amax(-1).clamp(0.0, 1.0)


@functools.cache
def autocorrelation_of_window() -> Tensor:
    """The ``FRAME``-point Hann window's autocorrelation at lags 0..FRAME - 1, divided by its value at 0."""
    w = torch.hann_window(FRAME, dtype=torch.float64)
    r = torch.fft.irfft(torch.fft.rfft(w, 2 * FRAME).abs() ** 2, 2 * FRAME)[:FRAME]
    return (r / r[0]).float()


def pulse_train(f0: Tensor) -> Tensor:
    """Unit impulses (T,) one per period of the pitch contour ``f0`` (T,) in Hz, at 16 kHz, the first at
    sample 0: a pulse wherever the accumulated phase sum_{s<t} f0[s] / 16000 passes a whole cycle."""
    phase = torch.cumsum(f0.double() / SAMPLE_RATE, 0) - f0[0].double() / SAMPLE_RATE
    cycles = torch.floor(phase + 1e-9)
    out = torch.zeros_like(phase)
    out[torch.diff(cycles, prepend=cycles.new_full((1,), -1.0)) > 0] = 1.0
    return out


def vocode(wav: Tensor, f0: Tensor, noise: Tensor, warp: float = 1.0) -> Tensor:
    """``wav`` (T,) re-excited: each frame's LPC envelope (moved along frequency by ``warp`` as in
    :func:`formant_warp`) times a unit-energy mix of the pitch pulses of ``f0`` (T,) Hz and ``noise``
    (T,) (voiced share = the frame's :func:`voicing` mapped from 0.3..0.7 to 0..1), scaled to the
    frame's original energy."""
    n = wav.shape[-1]
    spec = _stft(wav.double())
    power = power_spectra(wav)
    a = lpc_filters(power)
    env = lpc_envelope(wav, a=a)
    env = _warp(env, warp) if warp != 1.0 else env

    def unit(z: Tensor) -> Tensor:
        return z / (z.abs() ** 2).sum(0, keepdim=True).clamp_min(1e-30).sqrt()

    voiced = ((voicing(wav, power=power, a=a).double() - 0.3) / 0.4).clamp(0, 1)
    excitation = voiced.sqrt() * unit(_stft(pulse_train(f0))) + (1 - voiced).sqrt() * unit(_stft(noise.double()))
    out = excitation * env.sqrt()
    out = out * ((spec.abs() ** 2).sum(0, keepdim=True) / (out.abs() ** 2).sum(0, keepdim=True).clamp_min(1e-30)).sqrt()
    return _istft(out, n).to(wav.dtype)


@dataclass
class Augmentation:
    """Random speaker, channel, room and noise variety for 16 kHz training clips (see the module)."""

    speed: tuple[float, float] = (1.0, 1.0)
    eq: float = 0.0
    band_limit: float = 0.0
    reverb: float = 0.0
    noise: float = 0.0
    snr: tuple[float, float] = (5.0, 40.0)
    gain_db: float = 0.0
    formant: tuple[float, float] = (1.0, 1.0)
    vocoder: float = 0.0
    f0: tuple[float, float] = (70.0, 300.0)
    freq_mask: float = 0.0
    time_mask: float = 0.0

    @classmethod
    def from_config(cls, config: Mapping | None, key: str = "data.augment") -> Augmentation | None:
        """Build from a recipe's mapping (``None`` or empty: no augmentation); one clear error per bad key."""
        if not config:
            return None
        if not isinstance(config, Mapping):
            raise UserError(f"{key} takes a mapping such as {{speed: [0.85, 1.15], eq: 0.8}}, got {config!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise UserError(f"{key}: unknown option {unknown[0]!r}; the options are {', '.join(sorted(known))}")
        values = {}
        for name, value in config.items():
            if name in RANGES:
                try:
                    lo, hi = (float(v) for v in value)
                except (TypeError, ValueError):
                    raise UserError(f"{key}.{name} takes a range [lo, hi], got {value!r}") from None
                positive = name != "snr"
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi) or (positive and lo <= 0):
                    raise UserError(f"{key}.{name}: [lo, hi] needs finite lo <= hi"
                                    f"{' and lo > 0' if positive else ''}, got {value!r}")
                if name == "f0" and not 40 <= lo <= hi <= 1000:
                    raise UserError(f"{key}.f0: a pitch range in Hz within [40, 1000], got {value!r}")
                if name == "formant" and not 0.5 <= lo <= hi <= 2:
                    raise UserError(f"{key}.formant: a warp range within [0.5, 2] (1 = unchanged), got {value!r}")
                values[name] = (lo, hi)
            else:
                try:
                    v = float(value)
                except (TypeError, ValueError):
                    raise UserError(f"{key}.{name} takes a number, got {value!r}") from None
                if name == "gain_db" and not (math.isfinite(v) and v >= 0):
                    raise UserError(f"{key}.gain_db takes a number of dB >= 0, got {value!r}")
                if name != "gain_db" and not 0 <= v <= 1:
                    raise UserError(f"{key}.{name} is a probability in [0, 1], got {value!r}")
                values[name] = v
        return cls(**values)

    def __call__(self, wav: Tensor, length: int = SAMPLE_RATE) -> Tensor:
        """One random draw applied to ``wav`` (T,) at 16 kHz; returns (length,) float32."""
        wav = wav.float()
        lo, hi = self.speed
        if hi > lo or lo != 1.0:
            factor = _uniform(lo, hi)
            if factor != 1.0:
                wav = place(speed_change(wav, factor), length, float(torch.rand(())))
        wav = wav[:length] if wav.shape[-1] >= length else torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))
        lo, hi = self.formant
        warp = _uniform(lo, hi) if hi > lo or lo != 1.0 else 1.0
        if _chance(self.vocoder):
            base = math.exp(_uniform(math.log(self.f0[0]), math.log(self.f0[1])))
            glide = _uniform(-4.0, 4.0)
            f0 = base * 2 ** (glide * (torch.arange(length) / length - 0.5) / 12)
            wav = vocode(wav, f0, torch.randn(length), warp)
        elif warp != 1.0:
            wav = formant_warp(wav, warp)
        n_fft = 2 * length
        freqs = torch.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
        db = torch.zeros_like(freqs)
        if _chance(self.eq):
            peaks = [(2 ** _uniform(math.log2(150), math.log2(6000)), _uniform(-10, 10), _uniform(0.3, 1.5))
                     for _ in range(2)]
            db = db + log_frequency_gain(freqs, _uniform(-6, 3), peaks)
        if _chance(self.band_limit):
            db = db + band_gain_db(freqs, _uniform(50, 400), _uniform(3000, 7500))
        if _chance(self.freq_mask):
            low = 2 ** _uniform(math.log2(150), math.log2(7000))
            db = torch.where((freqs >= low) & (freqs <= low * 2 ** _uniform(0.25, 1.0)), db - 120.0, db)
        spec = torch.fft.rfft(wav, n=n_fft)
        if bool(db.any()):
            spec = spec * 10 ** (db / 20)
        if _chance(self.reverb):
            rt60 = _uniform(0.1, 0.6)
            t = torch.arange(1, length) / SAMPLE_RATE
            tail = torch.randn(length - 1) * torch.exp(-6.91 * t / rt60)
            drr = 10 ** (_uniform(0, 15) / 10)
            tail = tail * math.sqrt(1.0 / (drr * max(float((tail ** 2).sum()), 1e-12)))
            spec = spec * torch.fft.rfft(torch.cat([torch.ones(1), tail]), n=n_fft)
        out = torch.fft.irfft(spec, n=n_fft)[:length]
        if _chance(self.noise):
            white = torch.fft.rfft(torch.randn(n_fft), n=n_fft) * 10 ** (log_frequency_gain(freqs, _uniform(-6, 0)) / 20)
            noise = torch.fft.irfft(white, n=n_fft)[:length]
            snr = _uniform(*self.snr)
            power = float(out.pow(2).mean())
            noise = noise * math.sqrt(power / max(float(noise.pow(2).mean()), 1e-12) / 10 ** (snr / 10))
            out = out + noise
        if _chance(self.time_mask):
            width = int(_uniform(0.02, 0.12) * SAMPLE_RATE)
            start = int(_uniform(0, length - width))
            out[start:start + width] = 0.0
        if self.gain_db > 0:
            out = out * 10 ** (_uniform(-self.gain_db, self.gain_db) / 20)
        return out.float()
