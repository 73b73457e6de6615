"""A rule-based formant synthesiser for the Speech Commands words (``ssm speech prepare --engine klatt``).

espeak-ng, the default stand-in, draws every phone from rules (formant synthesis); flite and festival
concatenate or model recordings of people.  Models trained on the two recorded families score far
lower on espeak-ng than on each other (benchmarks/README.md, "Why held-out espeak-ng stays far"): what
they miss is how rules draw the consonants and transitions, not a property of the signal that an
augmentation can add.  This module is a second, independent rule-drawn family, written for ssm-suite
from the published method, sharing no code or phone data with espeak-ng:

- **Synthesis** follows Klatt (1980), "Software for a cascade/parallel formant synthesizer", JASA 67(3):
  parameters are updated every 5 ms; a voicing source (the derivative of a KLGLOTT88-style glottal
  flow pulse ``t^2 - t^3`` over an open quotient of the period, with spectral tilt, jitter and
  shimmer) and aspiration noise drive a cascade of five formant resonators behind a nasal pole-zero
  pair; frication noise drives a parallel bank (F2-F6 at their own amplitudes, plus a flat bypass).
  Each resonator is Klatt's difference equation ``y[n] = A x[n] + B y[n-1] + C y[n-2]`` with
  ``C = -exp(-2 pi BW T)``, ``B = 2 exp(-pi BW T) cos(2 pi F T)``, ``A = 1 - B - C``; the nasal zero
  is its inverse, ``y[n] = (x[n] - B x[n-1] - C x[n-2]) / A``.
- **Phones** (ARPAbet) take their targets from the acoustic-phonetics literature: vowel formants of
  adult male speakers (Peterson & Barney 1952; Hillenbrand et al. 1995), consonant loci (Delattre,
  Liberman & Cooper 1955), and inherent and minimum durations (Klatt 1979).
- **Rules**: a segment lasts ``min + (inherent - min) x k``, with ``k`` from phrase-final lengthening,
  shortening before voiceless consonants and in unstressed syllables, and the speaker's tempo.
  Formants move piecewise-linearly between anchors: a vowel's target (two for a diphthong), a
  sonorant consonant's target, and at each obstruent-vowel boundary a point between the consonant's
  locus and the vowel (Delattre's loci are where transitions point, not where they start).  Stops have
  a closure (silent or with a voice bar), a burst and, when voiceless and not after /s/, aspiration.
  Nasals have a murmur with the nasal pole-zero pair apart, and nasalise the edge of the next vowel.
  F0 rises and falls over the word (sometimes rises, as a question).
- **Speakers** are drawn from their name (``klatt-017``): vocal-tract length (men, women, children:
  formants x 0.9-1.35), open quotient, spectral tilt, breathiness, jitter, formant bandwidths, a
  personal shift of each vowel's F1 and F2 (an accent), transition speed, aspiration length, whether
  final stops are released, voicing of voiced stops' closures, and a few pronunciation variants
  (``zero`` with /ih/ or /iy/, ``dog`` with /ao/ or /aa/).  Each clip then takes its pitch (Hz) and
  speed (percent) from the stand-in's plan, and its noise draws from the clip's seed: the same seed
  gives the same samples.

It speaks the 35 Speech Commands words (:data:`LEXICON`); other words are refused with the list.

Measured (benchmarks/README.md, "A second rule-drawn family among the training sources"): models that never
heard it score 83-96% on its clips; added to flite + festival as a training source, it lifts an SC09
classifier on held-out espeak-ng from 68.7% to 76-83% (three seeds); an SC10 one (53-61% against 54.9%)
does not gain beyond the seed spread.  With averaged weights and the raw waveform: the sections after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter, lfiltic

from apps.common.errors import UserError

RATE = 16000
FRAME = 80  # samples per parameter update (5 ms, Klatt's)
FRICATION = 2.0  # the parallel branch's level against the cascade's
VOICES = 120  # speakers of the stand-in: klatt-000 ... klatt-119


@dataclass(frozen=True)
class Phone:
    """One phone's targets for an adult male vocal tract (Hz, ms, dB)."""

    kind: str  # vowel, glide, nasal, stop, fricative, aspirate
    f: tuple[float, float, float]  # F1-F3: target, or locus for stops and fricatives
    b: tuple[float, float, float] = (60.0, 90.0, 150.0)
    dur: tuple[int, int] = (100, 50)  # inherent and minimum duration, ms (Klatt 1979)
    voiced: bool = True
    end: tuple[float, float, float] | None = None  # a diphthong's offglide targets
    fric: tuple[float, ...] = ()  # frication: AF, then A2-A6 and AB (parallel amplitudes, dB; 0 = off)


#: ARPAbet phones: vowels (Peterson & Barney 1952, Hillenbrand et al. 1995, men), consonant loci
#: (Delattre et al. 1955), durations (Klatt 1979), frication amplitudes after Klatt (1980)
PHONES: dict[str, Phone] = {
    "IY": Phone("vowel", (300, 2280, 3000), (45, 110, 300), (155, 55)),
    "IH": Phone("vowel", (420, 2000, 2650), (50, 100, 140), (135, 40)),
    "EY": Phone("vowel", (480, 2050, 2650), (70, 100, 200), (190, 100), end=(340, 2250, 2900)),
    "EH": Phone("vowel", (570, 1800, 2600), (60, 90, 200), (150, 70)),
    "AE": Phone("vowel", (660, 1720, 2450), (70, 150, 320), (230, 80)),
    "AA": Phone("vowel", (750, 1200, 2550), (130, 70, 160), (240, 100)),
    "AO": Phone("vowel", (620, 950, 2550), (90, 100, 80), (240, 130)),
    "OW": Phone("vowel", (520, 1000, 2400), (80, 70, 70), (220, 80), end=(420, 880, 2300)),
    "UH": Phone("vowel", (460, 1120, 2430), (80, 100, 80), (160, 60)),
    "UW": Phone("vowel", (360, 1050, 2300), (65, 110, 140), (210, 70)),
    "AH": Phone("vowel", (630, 1200, 2550), (80, 50, 140), (140, 60)),
    "ER": Phone("vowel", (480, 1350, 1650), (100, 60, 110), (180, 80)),
    "AX": Phone("vowel", (500, 1450, 2450), (100, 100, 200), (120, 60)),
    "AY": Phone("vowel", (730, 1250, 2550), (90, 80, 150), (250, 150), end=(420, 1950, 2600)),
    "AW": Phone("vowel", (720, 1250, 2550), (90, 80, 150), (260, 100), end=(450, 950, 2350)),
    "W": Phone("glide", (290, 620, 2150), (50, 80, 60), (80, 60)),
    "Y": Phone("glide", (260, 2100, 3000), (40, 250, 500), (80, 40)),
    "R": Phone("glide", (320, 1070, 1400), (70, 100, 120), (80, 30)),
    "L": Phone("glide", (330, 1050, 2850), (50, 100, 280), (80, 40)),
    "M": Phone("nasal", (480, 1270, 2130), (40, 200, 200), (70, 60)),
    "N": Phone("nasal", (480, 1340, 2470), (40, 300, 300), (60, 50)),
    "P": Phone("stop", (200, 900, 2100), dur=(85, 50), voiced=False, fric=(60, 0, 0, 0, 0, 0, 63)),
    "B": Phone("stop", (200, 900, 2100), dur=(85, 60), fric=(60, 0, 0, 0, 0, 0, 63)),
    "T": Phone("stop", (200, 1700, 2650), dur=(75, 50), voiced=False, fric=(60, 0, 30, 45, 57, 63, 0)),
    "D": Phone("stop", (200, 1700, 2650), dur=(75, 50), fric=(60, 0, 0, 47, 60, 62, 0)),
    "K": Phone("stop", (200, 1900, 2700), dur=(80, 60), voiced=False, fric=(60, 53, 43, 45, 0, 0, 0)),
    "G": Phone("stop", (200, 1900, 2700), dur=(80, 60), fric=(60, 53, 40, 0, 0, 0, 0)),
    "F": Phone("fricative", (340, 1100, 2080), dur=(100, 80), voiced=False, fric=(50, 0, 0, 0, 0, 0, 57)),
    "V": Phone("fricative", (220, 1100, 2080), dur=(60, 40), fric=(45, 0, 0, 0, 0, 0, 57)),
    "TH": Phone("fricative", (320, 1290, 2540), dur=(80, 60), voiced=False, fric=(54, 0, 0, 0, 0, 28, 48)),
    "S": Phone("fricative", (320, 1390, 2530), dur=(105, 60), voiced=False, fric=(64, 0, 0, 0, 0, 52, 0)),
    "Z": Phone("fricative", (240, 1520, 2480), dur=(75, 40), fric=(58, 0, 0, 0, 0, 52, 0)),
    "SH": Phone("fricative", (300, 1840, 2750), dur=(105, 80), voiced=False, fric=(66, 0, 57, 48, 48, 46, 0)),
    "ZH": Phone("fricative", (300, 1840, 2750), dur=(70, 40), fric=(60, 0, 57, 48, 48, 46, 0)),
    "HH": Phone("aspirate", (500, 1500, 2500), dur=(80, 20), voiced=False),
}

#: the 35 Speech Commands words; ``1`` marks the stressed vowel, ``0`` an unstressed one; ``|``
#: separates a speaker's pronunciation variants
LEXICON: dict[str, str] = {
    "backward": "B AE1 K W ER0 D", "bed": "B EH1 D", "bird": "B ER1 D", "cat": "K AE1 T",
    "dog": "D AO1 G|D AA1 G", "down": "D AW1 N", "eight": "EY1 T", "five": "F AY1 V",
    "follow": "F AA1 L OW0", "forward": "F AO1 R W ER0 D", "four": "F AO1 R", "go": "G OW1",
    "happy": "HH AE1 P IY0", "house": "HH AW1 S", "learn": "L ER1 N", "left": "L EH1 F T",
    "marvin": "M AA1 R V IH0 N", "nine": "N AY1 N", "no": "N OW1", "off": "AO1 F|AA1 F", "on": "AA1 N|AO1 N",
    "one": "W AH1 N", "right": "R AY1 T", "seven": "S EH1 V AX0 N", "sheila": "SH IY1 L AX0",
    "six": "S IH1 K S", "stop": "S T AA1 P", "three": "TH R IY1", "tree": "T R IY1", "two": "T UW1",
    "up": "AH1 P", "visual": "V IH1 ZH UW0 AX0 L|V IH1 ZH AX0 L", "wow": "W AW1", "yes": "Y EH1 S",
    "zero": "Z IH1 R OW0|Z IY1 R OW0",
}



def check_words(words: Sequence[str]) -> None:
    """Refuse, in one line, words :data:`LEXICON` cannot say."""
    unknown = [w for w in words if w not in LEXICON]
    if unknown:
        raise UserError(f"--engine klatt has no pronunciation for {', '.join(unknown)}: it speaks the 35 Speech "
                        f"Commands words ({', '.join(sorted(LEXICON))}); use --words sc35, sc10, sc09 or some of them")


@dataclass(frozen=True)
class Voice:
    """A speaker: the settings drawn from its name."""

    scale: float  # formant frequencies x this (vocal-tract length)
    pitch_scale: float  # the clip's pitch x this
    open_quotient: float
    tilt_db: float  # extra attenuation of the voicing source at 3 kHz
    breath_db: float  # aspiration during voicing (0: none)
    jitter: float  # relative F0 perturbation
    shimmer: float  # relative amplitude perturbation
    bandwidth: float  # formant bandwidths x this
    vowel_shift: dict  # per vowel: (F1, F2) factors, the speaker's accent
    transition: float  # transition lengths x this
    aspiration: float  # voice-onset times of voiceless stops x this
    release: float  # chance that a word-final stop is released
    prevoice: float  # chance that a voiced stop's closure is voiced
    question: float  # chance of a rising contour
    f4: float
    f5: float
    variant: int  # which pronunciation of a word with several


def voice(name: str) -> Voice:
    """The speaker ``name`` (any string), drawn deterministically from its hash."""
    rng = np.random.default_rng(int(hashlib.sha1(name.encode()).hexdigest()[:12], 16))
    kind = rng.choice(3, p=[0.5, 0.38, 0.12])  # man, woman, child
    scale = float(rng.uniform(*((0.9, 1.05), (1.1, 1.22), (1.24, 1.35))[kind]))
    vowels = [p for p, ph in PHONES.items() if ph.kind == "vowel"]
    return Voice(scale=scale, pitch_scale=float((0.85, 1.45, 1.7)[kind] * rng.uniform(0.9, 1.1)),
                 open_quotient=float(rng.uniform(0.35, 0.75)), tilt_db=float(rng.uniform(0, 18)),
                 breath_db=float(rng.choice([0.0, rng.uniform(30, 48)], p=[0.5, 0.5])),
                 jitter=float(rng.uniform(0.002, 0.02)), shimmer=float(rng.uniform(0.01, 0.1)),
                 bandwidth=float(rng.uniform(0.7, 1.6)),
                 vowel_shift={v: (float(rng.normal(1, 0.05)), float(rng.normal(1, 0.05))) for v in vowels},
                 transition=float(rng.uniform(0.7, 1.5)), aspiration=float(rng.uniform(0.6, 1.4)),
                 release=float(rng.uniform(0.2, 1.0)), prevoice=float(rng.uniform(0, 0.8)),
                 question=float(rng.uniform(0, 0.25)), f4=float(rng.uniform(3250, 3700)),
                 f5=float(rng.uniform(3850, 4500)), variant=int(rng.integers(1 << 16)))


# ---------------------------------------------------------------------------------------------- filters

def resonator_coefficients(f: np.ndarray, bw: np.ndarray, rate: int = RATE) -> tuple[np.ndarray, ...]:
    """Klatt's resonator ``A, B, C`` for centre frequencies ``f`` and bandwidths ``bw`` (Hz)."""
    c = -np.exp(-2 * np.pi * bw / rate)
    b = 2 * np.exp(-np.pi * bw / rate) * np.cos(2 * np.pi * f / rate)
    return 1 - b - c, b, c


def resonate(x: np.ndarray, f: np.ndarray, bw: np.ndarray, gain: np.ndarray | None = None,
             frame: int = FRAME) -> np.ndarray:
    """``x`` through a resonator whose frequency and bandwidth change every ``frame`` samples.

    Within a frame it is ``y[n] = A x[n] + B y[n-1] + C y[n-2]`` (times ``gain``, the frame's input
    gain, default 1); the last two outputs carry into the next frame's coefficients.
    """
    a, b, c = resonator_coefficients(np.asarray(f, float), np.asarray(bw, float))
    g = a if gain is None else a * gain
    y = np.empty(len(x))
    past = [0.0, 0.0]  # y[n-1], y[n-2]
    for i in range(len(f)):
        s = slice(i * frame, (i + 1) * frame)
        den = [1.0, -b[i], -c[i]]
        y[s] = lfilter([g[i]], den, x[s], zi=lfiltic([g[i]], den, past))[0]
        past = [y[s][-1], y[s][-2]]
    return y


def antiresonate(x: np.ndarray, f: np.ndarray, bw: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """Klatt's antiresonator, ``y[n] = (x[n] - B x[n-1] - C x[n-2]) / A``, coefficients per frame."""
    a, b, c = (np.repeat(v, frame)[:len(x)] for v in resonator_coefficients(np.asarray(f, float),
                                                                            np.asarray(bw, float)))
    x1 = np.concatenate([[0.0], x[:-1]])
    x2 = np.concatenate([[0.0, 0.0], x[:-2]])
    return (x - b * x1 - c * x2) / a


def peak_gain(f: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """The input gain that gives Klatt's resonator a peak of about 1 (its DC gain is 1)."""
    a, b, c = resonator_coefficients(f, bw)
    w = 2 * np.pi * f / RATE
    z = np.exp(-1j * w)
    return np.abs(1 - b * z - c * z * z) / a


def db(x: np.ndarray | float) -> np.ndarray:
    """Klatt's amplitudes in dB to linear; 0 dB (and below) is silence."""
    x = np.asarray(x, float)
    return np.where(x > 0, 10 ** ((x - 60) / 20), 0.0)


# ---------------------------------------------------------------------------------------------- rules

@dataclass
class Segment:
    """One phone of a word as spoken: its symbol, stress and, once timed, where it starts and ends."""

    phone: str
    stress: int  # 1 stressed, 0 unstressed, -1 consonant
    start: float = 0.0  # seconds
    end: float = 0.0


def pronounce(word: str, v: Voice) -> list[Segment]:
    """``word``'s phones, in the speaker's variant, with stresses."""
    options = LEXICON[word].split("|")
    out = []
    for token in options[v.variant % len(options)].split():
        stress = int(token[-1]) if token[-1].isdigit() else -1
        out.append(Segment(token.rstrip("012"), stress))
    return out


def durations(segs: list[Segment], tempo: float) -> None:
    """Klatt's (1979) duration rule, ``min + (inherent - min) x k``, fills each segment's start and end."""
    last_vowel = max(i for i, s in enumerate(segs) if s.stress >= 0)
    t = 0.0
    for i, s in enumerate(segs):
        ph = PHONES[s.phone]
        inherent, least = ph.dur
        k = 1.0
        if i >= last_vowel:
            k *= 1.4  # phrase-final lengthening: the last syllable's vowel and its coda
        if s.stress == 0:
            k *= 0.5
        nxt = PHONES[segs[i + 1].phone] if i + 1 < len(segs) else None
        if s.stress >= 0 and nxt is not None and nxt.kind in ("stop", "fricative") and not nxt.voiced:
            k *= 0.7  # vowels shorten before voiceless obstruents
        if ph.kind == "stop" and i == 0:
            inherent, least = 0.6 * inherent, 0.6 * least  # an initial closure is heard only as its release
        d = (least + (inherent - least) * k) / 1000 * tempo
        s.start, s.end = t, t + d
        t += d


def _target(seg: Segment, v: Voice, at_end: bool) -> np.ndarray:
    ph = PHONES[seg.phone]
    f = np.array(ph.end if (at_end and ph.end is not None) else ph.f, float)
    if ph.kind == "vowel":
        s1, s2 = v.vowel_shift[seg.phone]
        f[0] *= s1
        f[1] *= s2
    return f


def _locus(phone: str, vowel_f: np.ndarray) -> np.ndarray:
    """Where an obstruent's transitions start: part way from its locus to the vowel (Delattre et al.)."""
    loc = np.array(PHONES[phone].f, float)
    if phone in ("K", "G"):  # velars: the locus follows the vowel (front or back)
        loc[1] = np.clip(1.1 * vowel_f[1] + 200, 1300, 2300)
        loc[2] = max(loc[1] + 500, vowel_f[2])
    return loc + np.array([0.25, 0.5, 0.5]) * (vowel_f - loc)


@dataclass
class Track:
    """Per-frame synthesis parameters."""

    f: np.ndarray  # (5, T) F1-F5 (Hz)
    b: np.ndarray  # (5, T) bandwidths
    f0: np.ndarray  # (T,) Hz
    av: np.ndarray  # voicing (dB)
    ah: np.ndarray  # aspiration
    af: np.ndarray  # frication
    par: np.ndarray  # (5, T) A2-A6 (dB)
    ab: np.ndarray  # bypass
    fnz: np.ndarray  # nasal zero (Hz); 270 cancels the nasal pole


def tracks(segs: list[Segment], v: Voice, pitch: float, rng: np.random.Generator) -> Track:
    """The parameter tracks of ``segs`` (durations filled in) for speaker ``v`` at mean F0 ``pitch``."""
    n = int(np.ceil((segs[-1].end + 0.03) * RATE / FRAME))
    t = (np.arange(n) + 0.5) * FRAME / RATE  # frame centres, seconds
    sonorant = [PHONES[s.phone].kind in ("vowel", "glide", "nasal") for s in segs]
    f, bws = _formants(segs, sonorant, v, t)
    tr = _sources(segs, sonorant, v, t, f, bws, rng)
    voiced = np.flatnonzero(tr.av > 0)
    lo, hi = (t[voiced[0]], t[voiced[-1]]) if voiced.size else (t[0], t[-1])
    u = np.clip((t - lo) / max(hi - lo, 1e-3), 0, 1)
    if rng.uniform() < v.question:
        contour = np.interp(u, [0, 0.6, 1], [1.0, 0.92, 1.3])
    else:  # a rise onto the stressed vowel, then the fall of a statement
        contour = np.interp(u, [0, 0.2, 1], [1.0, rng.uniform(1.08, 1.2), rng.uniform(0.7, 0.85)])
    tr.f0 = np.clip(pitch * v.pitch_scale * contour, 50, 500)
    return tr


def _formants(segs: list[Segment], sonorant: list[bool], v: Voice, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1-F5 and their bandwidths (5, T) at frame times ``t``: piecewise-linear between anchors."""
    anchors: list[tuple[float, np.ndarray]] = []
    trans = 0.04 * v.transition
    for i, s in enumerate(segs):
        ph = PHONES[s.phone]
        d = s.end - s.start
        if ph.kind == "vowel":
            lead = min(trans if i > 0 and not sonorant[i - 1] else 0.0, 0.4 * d)
            tail = min(trans if i + 1 < len(segs) and not sonorant[i + 1] else 0.0, 0.4 * d)
            if ph.end is not None:  # a diphthong: onset held for the first third, then the glide
                lead, tail = max(lead, 0.3 * d), max(tail, 0.15 * d)
            anchors += [(s.start + lead, _target(s, v, False)), (s.end - tail, _target(s, v, True))]
        elif ph.kind in ("nasal", "glide"):  # a short steady state (nasals hold longer)
            edge = 0.2 if ph.kind == "nasal" else 0.4
            anchors += [(s.start + edge * d, _target(s, v, False)), (s.end - edge * d, _target(s, v, False))]
        else:  # obstruents and /h/: the edge that meets a sonorant points at the locus
            prev = _target(segs[i - 1], v, True) if i > 0 and sonorant[i - 1] else None
            nxt = _target(segs[i + 1], v, False) if i + 1 < len(segs) and sonorant[i + 1] else None
            if ph.kind == "aspirate":  # /h/ is the next vowel, breathed
                ref = nxt if nxt is not None else prev
                anchors += [(s.start, ref), (s.end, ref)]
                continue
            if prev is not None:
                anchors.append((s.start, _locus(s.phone, prev)))
            if nxt is not None:
                anchors.append((s.end, _locus(s.phone, nxt)))
            if prev is None and nxt is None:
                anchors.append(((s.start + s.end) / 2, np.array(ph.f, float)))
    times = np.array([a for a, _ in anchors])
    values = np.stack([b for _, b in anchors], 1)
    order = np.argsort(times, kind="stable")
    n = t.size
    f = np.stack([np.interp(t, times[order], values[k, order]) for k in range(3)]) * v.scale
    f = np.concatenate([f, np.full((1, n), v.f4 * v.scale), np.full((1, n), v.f5 * v.scale)])
    f[3] = np.maximum(f[3], f[2] + 300)
    f[4] = np.maximum(f[4], f[3] + 300)
    bws = np.zeros((5, n))
    for s in segs:
        bws[:3, (t >= s.start) & (t < s.end)] = np.array(PHONES[s.phone].b)[:, None]
    bws[:3, t >= segs[-1].end] = np.array(PHONES[segs[-1].phone].b)[:, None]
    bws[:3] *= v.bandwidth
    bws[3], bws[4] = 250 * v.bandwidth, 200 * v.bandwidth
    return f, bws


def _sources(segs: list[Segment], sonorant: list[bool], v: Voice, t: np.ndarray, f: np.ndarray, bws: np.ndarray,
             rng: np.random.Generator) -> Track:
    """The source amplitudes of ``segs``; nasal murmurs and voice bars also lower F1 in ``f`` and ``bws``."""
    n = t.size
    av, ah, af = np.zeros(n), np.zeros(n), np.zeros(n)
    par, ab = np.zeros((5, n)), np.zeros(n)
    fnz = np.full(n, 270.0)
    onsets = []
    for i, s in enumerate(segs):
        ph = PHONES[s.phone]
        m = (t >= s.start) & (t < s.end)
        before, after = i > 0 and sonorant[i - 1], i + 1 < len(segs) and sonorant[i + 1]
        if ph.kind == "vowel":
            av[m] = 60.0 if s.stress != 0 else 56.0
        elif ph.kind == "glide":
            av[m] = 57
        elif ph.kind == "nasal":  # the murmur: the nasal pole and zero apart, F1 low and broad
            av[m], fnz[m] = 54, 450
            f[0, m], bws[0, m] = 250 * v.scale, 100 * v.bandwidth
            if after:  # the neighbouring vowels' edges are nasalised
                fnz[(t >= s.end) & (t < s.end + 0.04)] = 360
            if before:
                fnz[(t >= s.start - 0.06) & (t < s.start)] = 360
        elif ph.kind == "aspirate":
            ah[m] = 57
        elif ph.kind == "fricative":
            af[m], par[:, m], ab[m] = ph.fric[0], np.array(ph.fric[1:6])[:, None], ph.fric[6]
            if ph.voiced:
                av[m] = 48
        else:  # stop: closure, burst, aspiration
            final = i == len(segs) - 1
            released = not final or rng.uniform() < v.release
            burst = (0.008 if ph.voiced else 0.012) if released else 0.0
            closure = m & (t < s.end - burst)
            if ph.voiced and (before or rng.uniform() < v.prevoice):
                av[closure] = 42  # a voice bar
                f[0, closure] = 180 * v.scale
            rel = m & (t >= s.end - burst)
            af[rel], par[:, rel], ab[rel] = ph.fric[0] - 6 * final, np.array(ph.fric[1:6])[:, None], ph.fric[6]
            if after:
                after_s = i > 0 and segs[i - 1].phone == "S"  # /st/: unaspirated
                vot = 0.012 if ph.voiced or after_s else 0.055 * v.aspiration
                onsets.append(((t >= s.end) & (t < s.end + vot), 45 if ph.voiced else 56))
            elif final and released and not ph.voiced:
                ah[(t >= s.end) & (t < s.end + 0.03 * v.aspiration)] = 48
    for asp, level in onsets:  # the next vowel starts aspirated, its voicing delayed
        av[asp], ah[asp] = 0, level
    if v.breath_db > 0:
        ah = np.maximum(ah, np.where(av > 50, v.breath_db, 0))
    return Track(f=f, b=bws, f0=np.zeros(n), av=av, ah=ah, af=af, par=par, ab=ab, fnz=fnz)


def _smooth(x: np.ndarray, frames: int = 2) -> np.ndarray:
    """A short moving average of a per-frame amplitude, so that segments do not switch with a click."""
    k = np.ones(2 * frames + 1) / (2 * frames + 1)
    return np.convolve(np.pad(x, frames, mode="edge"), k, mode="valid")


def _per_sample(x: np.ndarray) -> np.ndarray:
    """A per-frame value held for each of the frame's samples."""
    return np.repeat(x, FRAME)


def glottal_source(f0_frames: np.ndarray, v: Voice, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The voicing waveform at :data:`RATE` for per-frame F0 (Hz), and where the glottis is closed (bool).

    Each period is the derivative of a ``t^2 - t^3`` glottal flow pulse over the open quotient, with a slow
    F0 wobble (jitter), one random gain per period (shimmer) and a one-pole low-pass that takes
    ``v.tilt_db`` off at 3 kHz.
    """
    n = f0_frames.size
    T = n * FRAME
    f0 = np.interp(np.arange(T), np.arange(n) * FRAME + FRAME / 2, f0_frames)
    wobble = lfilter([0.02], [1, -0.98], rng.standard_normal(T))  # slow, smooth F0 perturbation
    f0 = f0 * (1 + v.jitter * wobble / max(np.std(wobble), 1e-9))
    phase = np.cumsum(f0 / RATE) % 1.0
    tau = phase / v.open_quotient
    source = np.where(tau < 1, 2 * tau - 3 * tau ** 2, 0.0)
    period = np.cumsum(np.diff(phase, prepend=0) < 0)
    source *= 1 + v.shimmer * rng.standard_normal(period[-1] + 1)[period]
    pole = 0.0  # solve |(1 - p) / (1 - p e^{-jw})| = 10^(-tilt / 20) at w = 3 kHz for the pole p
    if v.tilt_db > 0.1:
        a2 = 10 ** (-v.tilt_db / 10)
        w = 2 * np.pi * 3000 / RATE
        qa, qb, qc = 1 - a2, -2 + 2 * a2 * np.cos(w), 1 - a2
        pole = float((-qb - np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa))
    return lfilter([1 - pole], [1, -pole], source), tau >= 1


def render(tr: Track, v: Voice, rng: np.random.Generator) -> np.ndarray:
    """Klatt's cascade/parallel synthesiser on the tracks: float64 samples at :data:`RATE`."""
    n = tr.f0.size
    T = n * FRAME
    source, closed = glottal_source(tr.f0, v, rng)
    av = _per_sample(db(_smooth(tr.av)))
    noise = rng.standard_normal(T)
    asp = _per_sample(db(_smooth(tr.ah)))
    asp = asp * np.where(closed & (av > 0), 0.5, 1.0)  # breath is louder while the glottis is open
    cascade_in = 8 * av * source + 0.3 * asp * noise
    # cascade: the nasal pole-zero pair, then F5 ... F1
    y = antiresonate(cascade_in, tr.fnz, np.full(n, 100.0))
    y = resonate(y, np.full(n, 270.0), np.full(n, 100.0))
    for k in range(4, -1, -1):
        y = resonate(y, tr.f[k], tr.b[k])
    # parallel: frication through F2-F5 and a fixed high F6, with alternating signs, and the bypass
    # frication noise, radiated from the lips like the rest (Klatt's first difference at the output)
    fric = _per_sample(db(tr.af)) * np.diff(rng.standard_normal(T + 1))
    par = np.zeros(T)
    f6 = np.full(n, min(5500 * v.scale, 7200.0))
    for j, (fk, bk) in enumerate([(tr.f[1], tr.b[1] * 1.5), (tr.f[2], tr.b[2] * 1.5), (tr.f[3], tr.b[3]),
                                  (tr.f[4], tr.b[4]), (f6, np.full(n, 1000.0))]):
        amp = tr.par[j]
        if not amp.any():
            continue
        par += (-1) ** j * resonate(fric, fk, bk, gain=db(amp) * peak_gain(fk, bk))
    par += _per_sample(db(tr.ab)) * fric
    out = y + FRICATION * par
    return lfilter([1, -1], [1, -0.995], out)  # remove DC


def say(word: str, voice_name: str, pitch: float, speed: float, seed: int) -> np.ndarray:
    """``word`` spoken by speaker ``voice_name`` at mean F0 ``pitch`` Hz and ``speed`` percent of the
    speaker's rate: float32 samples at :data:`RATE` (about 0.2-0.9 s, peak 0.9)."""
    check_words([word])
    v = voice(voice_name)
    rng = np.random.default_rng(seed)
    segs = pronounce(word, v)
    durations(segs, tempo=100.0 / speed)
    wav = render(tracks(segs, v, pitch, rng), v, rng)
    return (0.9 * wav / max(float(np.abs(wav).max()), 1e-12)).astype(np.float32)
