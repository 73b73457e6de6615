"""``ssm speech prepare``: offline stand-ins for Speech Commands v0.02, from four independent synthesisers.

The real dataset (Warden 2018, "Speech Commands: A Dataset for Limited-Vocabulary Speech
Recognition") is one folder per word of 1-second 16 kHz mono WAVs named
``<speaker>_nohash_<k>.wav``, with ``validation_list.txt`` and ``testing_list.txt`` (lines
``word/file.wav``; training is everything else) and ``_background_noise_/``.  This module writes
exactly that layout from a speech synthesiser (``--engine``):

- ``espeak-ng`` (default): formant synthesis; every (English accent, voice variant) pair is one
  "speaker" with its own base pitch and speed.
- ``flite``: CMU's Flite, an unrelated engine whose voices are built from recordings of people
  (the CMU ARCTIC speakers awb, rms and slt by statistical parametric synthesis, the kal diphone
  voices by concatenation; kal is an 8 kHz voice, so its clips are band-limited like a phone's).
  Every (voice, vocal-tract warp) pair is one speaker: the warp resamples the voice by 0.84-1.16,
  which moves its formants and pitch together, and each speaker has its own base pitch target
  and speaking rate.
- ``festival``: the Festival Speech Synthesis System (Edinburgh), with its own text front end,
  prosody models and waveform synthesis: the US English diphone voices kal and ked (two male
  speakers, residual-excited LPC concatenation) and the HTS voice cmu_us_slt_arctic_hts (a female
  ARCTIC speaker, statistical parametric synthesis by Festival's own hts_engine).  Speakers are
  (voice, warp) pairs as for flite; the diphone voices take each speaker's pitch target, the HTS
  voice only its rate (its pitch comes from its model, moved by the warp alone).  Festival runs as
  one process per batch of clips, since starting it costs more than speaking a word.
- ``klatt``: ssm-suite's own rule-based formant synthesiser (:mod:`apps.speech.klatt`: Klatt's 1980
  cascade/parallel synthesiser driven by phone rules from the acoustic-phonetics literature), a
  second rule-drawn family beside espeak-ng that shares none of its code or phone data.  Its 120
  speakers (``klatt-000`` ...) are men, women and children with their own vocal tracts, glottal
  sources, accents and articulation; it speaks the 35 Speech Commands words.

Each clip jitters the speaker's pitch and speed, is trimmed of silence, resampled to 16 kHz,
scaled, placed at a random offset inside one second and optionally given light noise.  Speakers,
not clips, are split 80/10/10, so no test voice is heard in training.  Everything is drawn from
``--seed`` up front; every synthesiser is deterministic, so the same seed gives the same bytes.
Several synthesiser processes run at once (``--jobs``), each writing to a pipe.  Training on one
engine's stand-in and testing on another's measures whether a model learned the words or the
synthesiser.

``--engine asterisk`` is no synthesiser but a probe with a real human voice: the ten digits
recorded by Allison Smith for Asterisk (Debian ``asterisk-core-sounds-en-wav``, CC-BY-SA-3.0;
8 kHz telephone recordings), resampled to 16 kHz and centred in one second, laid out as a
test-only SC09 set (every clip in ``testing_list.txt``).  It is ten clips of one speaker: a
smoke test of an SC09 model on a human voice, not an accuracy benchmark.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from rich.progress import Progress
from scipy.signal import lfilter, resample_poly

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.prepared import already_prepared, building
from apps.common.speech_commands import SAMPLE_RATE, WORD_SETS
from apps.speech import klatt

#: espeak-ng's English accents (mbrola voices need an extra package, so they are left out)
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
ESPEAK_RATE = 22050
#: Flite's built-in voices that speak (``awb_time`` writes near-silence, so it is left out)
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FLITE_WARPS = (0.84, 0.88, 0.92, 0.96, 1.0, 1.04, 1.08, 1.12, 1.16)
#: Festival's US English voices (Debian festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts)
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
#: vocal-tract warps applied to each Flite or Festival voice (resampling factors: formants and pitch scale by it)
WARPS = FLITE_WARPS
FESTIVAL_BATCH = 40  # clips per Festival process
ENGINES = ("espeak-ng", "flite", "festival", "klatt", "asterisk")
#: where Debian's asterisk-core-sounds-en-wav puts Allison Smith's digits (0.wav ... 9.wav)
ASTERISK_DIGITS = "/usr/share/asterisk/sounds/en_US_f_Allison/digits"
NOISE_FILES = ("white_noise", "pink_noise", "brown_noise", "hum")


@dataclass(frozen=True)
class Clip:
    """One utterance to synthesise: where it goes and how it is spoken."""

    word: str
    speaker: str
    index: int
    voice: str
    pitch: int  # espeak-ng: its 0-99 pitch; flite, festival, klatt: the target mean F0 in Hz
    speed: int  # espeak-ng: words per minute; flite, festival, klatt: percent of the voice's own rate
    gain: float
    offset: float  # fraction of the free room before the word
    noise: float
    seed: int

    @property
    def relpath(self) -> str:
        return f"{self.word}/{self.speaker}_nohash_{self.index}.wav"


def _voice_listing(cmd: list[str], need: str) -> str:
    """The synthesiser's voice list (``cmd``'s stdout); a missing synthesiser is one line naming the install."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        raise UserError(f"{need}: run `make system-deps` or `sudo apt-get install {cmd[0]}`") from e


def espeak_variants() -> list[str]:
    """Names of the installed espeak-ng voice variants (``m3``, ``klatt4``, ``croak``, ...)."""
    listing = _voice_listing(["espeak-ng", "--voices=variant"], "espeak-ng is needed to prepare speech-commands")
    names = [line.split()[-1].split("/")[-1] for line in listing.splitlines()[1:] if "!v/" in line]
    return sorted(set(names))


def warped_voices(engine: str, wanted: Sequence[str], have: set[str], listing: str, packages: str) -> list[str]:
    """Each voice of ``wanted`` that the synthesiser has, with every warp: ``slt@0.92``, ...

    One speaker per (voice, warp) pair; none installed is one line naming the packages to install.
    """
    voices = [v for v in wanted if v in have]
    if not voices:
        raise UserError(f"{engine} lists none of the voices {', '.join(wanted)} (it says: {listing.strip()!r}); "
                        f"install them with `make system-deps` or `sudo apt-get install {packages}`")
    return [f"{v}@{w:.2f}" for v in voices for w in WARPS]


def split_warp(voice: str) -> tuple[str, float]:
    """``"slt@0.92"`` -> ``("slt", 0.92)``; a voice without a warp has warp 1."""
    name, _, warp = voice.partition("@")
    return name, float(warp or 1)


def flite_voices() -> list[str]:
    """Flite's installed voices among :data:`FLITE_VOICES`, each with every warp: ``slt@0.92``, ..."""
    listing = _voice_listing(["flite", "-lv"], "flite is needed for --engine flite")
    return warped_voices("flite", FLITE_VOICES, set(listing.replace("Voices available:", "").split()), listing,
                         "--reinstall flite")


def festival_voices() -> list[str]:
    """Festival's installed voices among :data:`FESTIVAL_VOICES`, each with every warp: ``ked_diphone@0.92``, ..."""
    listing = _voice_listing(["festival", "-b", "(print (voice.list))"],
                             "festival is needed for --engine festival (with festvox-kdlpc16k, festvox-kallpc16k, "
                             "festvox-us-slt-hts)")
    return warped_voices("festival", FESTIVAL_VOICES, set(listing.replace("(", " ").replace(")", " ").split()),
                         listing, "festvox-kdlpc16k festvox-kallpc16k festvox-us-slt-hts")


@dataclass(frozen=True)
class Engine:
    """What differs between synthesisers: the speakers, their settings' ranges, and the command."""

    name: str
    base_pitch: tuple[int, int]  # a speaker's base pitch, drawn from [lo, hi)
    base_speed: tuple[int, int]
    pitch_jitter: int  # per clip, +- this
    speed_jitter: int
    pitch_range: tuple[int, int]  # clipped to

    def voices(self) -> list[str]:
        if self.name == "flite":
            return flite_voices()
        if self.name == "festival":
            return festival_voices()
        if self.name == "klatt":
            return [f"klatt-{i:03d}" for i in range(klatt.VOICES)]
        return [f"{a}+{v}" for a in ACCENTS for v in espeak_variants()]


ENGINE_SPECS = {
    "espeak-ng": Engine("espeak-ng", (20, 80), (135, 200), 8, 15, (0, 99)),
    "flite": Engine("flite", (90, 200), (82, 122), 12, 8, (60, 260)),
    "festival": Engine("festival", (80, 190), (82, 122), 12, 8, (60, 260)),
    "klatt": Engine("klatt", (90, 180), (82, 122), 12, 8, (60, 260)),  # x the speaker's own pitch scale
}


def speaker_id(voice: str) -> str:
    """Eight hex digits naming a voice, like the hashed speaker ids of the real dataset."""
    return hashlib.sha1(voice.encode()).hexdigest()[:8]


def plan_clips(words: Sequence[str], per_word: int, seed: int, noise: float,
               variants: Sequence[str] | None = None, engine: str = "espeak-ng",
               voices: Sequence[str] | None = None) -> tuple[list[Clip], dict[str, str], dict[str, dict]]:
    """Every clip to write, the split of each speaker, and each speaker's base voice settings.

    Speakers (espeak-ng: accent x ``variants``; flite, festival: voice x warp, or ``voices`` when given) are
    shuffled and split 80/10/10 into train/validation/test; each word gets ``max(1, round(0.1 N))``
    validation and test clips and the rest in training, each spoken by a speaker drawn from that
    split's pool.
    """
    if per_word < 3:
        raise UserError(f"--per-word must be at least 3 (one clip per split), got {per_word}")
    spec = ENGINE_SPECS[engine]
    rng = np.random.default_rng(seed)
    if voices is None:
        voices = [f"{a}+{v}" for a in ACCENTS for v in variants] if variants is not None else spec.voices()
    voices = list(voices)
    order = rng.permutation(len(voices))
    n_held = max(1, round(0.1 * len(voices)))
    pools = {"validation": [voices[i] for i in order[:n_held]],
             "testing": [voices[i] for i in order[n_held:2 * n_held]],
             "train": [voices[i] for i in order[2 * n_held:]]}
    split_of = {speaker_id(v): s for s, pool in pools.items() for v in pool}
    base = {v: dict(pitch=int(rng.integers(*spec.base_pitch)), speed=int(rng.integers(*spec.base_speed)))
            for v in voices}
    held = max(1, round(0.1 * per_word))
    counts = {"validation": held, "testing": held, "train": per_word - 2 * held}
    clips = []
    for word in words:
        used: dict[str, int] = {}
        for split, n in counts.items():
            pool = pools[split]
            for i in rng.choice(len(pool), size=n, replace=n > len(pool)):
                voice = pool[int(i)]
                sid = speaker_id(voice)
                k = used.get(sid, 0)
                used[sid] = k + 1
                clips.append(Clip(word=word, speaker=sid, index=k, voice=voice,
                                  pitch=int(np.clip(base[voice]["pitch"]
                                                    + rng.integers(-spec.pitch_jitter, spec.pitch_jitter + 1),
                                                    *spec.pitch_range)),
                                  speed=int(base[voice]["speed"]
                                            + rng.integers(-spec.speed_jitter, spec.speed_jitter + 1)),
                                  gain=float(rng.uniform(0.25, 0.9)), offset=float(rng.uniform()),
                                  noise=float(noise * rng.uniform(0.5, 1.5)), seed=int(rng.integers(2**31))))
    info = {speaker_id(v): dict(voice=v, split=split_of[speaker_id(v)], **base[v]) for v in voices}
    return clips, split_of, info


def trim_silence(wav: np.ndarray, rate: int, threshold: float = 0.02, margin_s: float = 0.01) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold`` x peak (keeping a small margin)."""
    loud = np.flatnonzero(np.abs(wav) > threshold * max(float(np.abs(wav).max()), 1e-9))
    if loud.size == 0:
        return wav[:0]
    margin = int(margin_s * rate)
    return wav[max(0, loud[0] - margin): loud[-1] + margin + 1]


def speak(clip: Clip, engine: str = "espeak-ng") -> tuple[np.ndarray, int]:
    """The synthesiser's raw output for ``clip``: (samples (T,), their rate in Hz as heard).

    A Flite warp w relabels the voice's rate r as r * w: played back at 16 kHz after resampling,
    its formants and pitch scale by w and its duration by 1 / w.
    """
    voice, warp = split_warp(clip.voice)
    if engine == "festival":
        return speak_festival([clip])[0]
    if engine == "klatt":
        return klatt.say(clip.word, clip.voice, clip.pitch, clip.speed, clip.seed), klatt.RATE
    if engine == "flite":
        cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={100 / clip.speed:.4f}",
               "--setf", f"int_f0_target_mean={clip.pitch}", "-t", clip.word, "-o", "/dev/stdout"]
    else:
        cmd = ["espeak-ng", "-v", clip.voice, "-p", str(clip.pitch), "-s", str(clip.speed), "-z", "--stdout",
               clip.word]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return _warped(*soundfile.read(io.BytesIO(raw), dtype="float32"), warp)


def _warped(wav: np.ndarray, rate: int, warp: float) -> tuple[np.ndarray, int]:
    """Mono samples and their rate relabelled by the vocal-tract warp."""
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    return wav, int(round(rate * warp))


def festival_script(clips: Sequence[Clip], folder: Path) -> str:
    """The Scheme that makes Festival speak ``clips`` into ``folder/<i>.wav``, each with its own settings.

    Every utterance sets all of its parameters, so what it says does not depend on the clips before it.
    """
    lines, current = [], None
    for i, clip in enumerate(clips):
        voice, _ = split_warp(clip.voice)
        if voice != current:
            lines.append(f"(voice_{voice})")
            current = voice
        if voice.endswith("_hts"):  # hts_engine's -r is its speaking rate; it makes its own F0
            rate = f"'((\"-r\" {clip.speed / 100:.4f}))"
            lines.append(f"(set! hts_engine_params (append {voice}::hts_engine_params {rate}))")
        else:
            lines.append(f"(set! int_lr_params '((target_f0_mean {clip.pitch}) "
                         f"(target_f0_std {max(8, clip.pitch // 7)}) (model_f0_mean 170) (model_f0_std 34)))")
            lines.append(f"(Parameter.set 'Duration_Stretch {100 / clip.speed:.4f})")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{clip.word}")) "{folder / f"{i}.wav"}" \'riff)')
    return "\n".join(lines) + "\n"


def speak_festival(clips: Sequence[Clip]) -> list[tuple[np.ndarray, int]]:
    """Festival's raw output for each of ``clips`` (one Festival process): (samples (T,), rate as heard)."""
    with tempfile.TemporaryDirectory(prefix="ssm-festival-") as tmp:
        folder = Path(tmp)
        (folder / "speak.scm").write_text(festival_script(clips, folder))
        subprocess.run(["festival", "-b", str(folder / "speak.scm")], capture_output=True, check=True)
        return [_warped(*soundfile.read(str(folder / f"{i}.wav"), dtype="float32"), split_warp(c.voice)[1])
                for i, c in enumerate(clips)]


def finish(clip: Clip, wav: np.ndarray, rate: int, engine: str) -> np.ndarray:
    """A synthesiser's raw output for ``clip`` as one second of 16 kHz float32 audio (16000,)."""
    wav = trim_silence(wav, rate)
    if wav.size == 0:
        raise RuntimeError(f"{engine} voice {clip.voice} said nothing for {clip.word!r}")
    g = math.gcd(SAMPLE_RATE, rate)
    wav = resample_poly(wav, SAMPLE_RATE // g, rate // g).astype(np.float32)[:SAMPLE_RATE]  # e.g. 22050 -> 16000 Hz
    wav *= clip.gain / max(float(np.abs(wav).max()), 1e-9)
    out = np.zeros(SAMPLE_RATE, np.float32)
    start = int(clip.offset * (SAMPLE_RATE - wav.size))
    out[start:start + wav.size] = wav
    if clip.noise > 0:
        out += clip.noise * np.random.default_rng(clip.seed).standard_normal(SAMPLE_RATE).astype(np.float32)
    return np.clip(out, -1.0, 1.0)


def synthesise(clip: Clip, engine: str = "espeak-ng") -> np.ndarray:
    """Speak ``clip`` with ``engine`` and return one second of 16 kHz float32 audio (16000,)."""
    return finish(clip, *speak(clip, engine), engine)


def batches(clips: Sequence[Clip], engine: str) -> list[list[Clip]]:
    """The clips in the groups one synthesiser process speaks: one each, or for Festival up to
    :data:`FESTIVAL_BATCH` of one voice (fixed by the plan, so the output does not depend on ``--jobs``)."""
    if engine != "festival":
        return [[c] for c in clips]
    by_voice: dict[str, list[Clip]] = {}
    for c in clips:
        by_voice.setdefault(split_warp(c.voice)[0], []).append(c)
    return [group[i:i + FESTIVAL_BATCH] for _, group in sorted(by_voice.items())
            for i in range(0, len(group), FESTIVAL_BATCH)]


def background_noise(kind: str, seconds: float, seed: int) -> np.ndarray:
    """A stand-in for one ``_background_noise_`` recording: white, pink, brown noise or mains hum."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    white = rng.standard_normal(n)
    if kind == "white_noise":
        x = white
    elif kind == "pink_noise":  # Kellet's 1/f filter (poles and zeros of an approximately -3 dB/octave filter)
        x = lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1, -2.494956002, 2.017265875,
                                                                             -0.522189400], white)
    elif kind == "brown_noise":
        x = lfilter([1.0], [1.0, -0.995], white)
    else:  # 50 Hz hum with harmonics and a little hiss
        t = np.arange(n) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3, 5)) + 0.05 * white
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _write(path: Path, wav: np.ndarray) -> None:
    soundfile.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16")


def build(staging: Path, words: Sequence[str], per_word: int, seed: int = 0, noise: float = 0.0, jobs: int = 2,
          noise_seconds: float = 20.0, engine: str = "espeak-ng") -> dict[str, float]:
    """Write the stand-in spoken by ``engine`` into the empty folder ``staging``; returns timings.

    ``prepare`` calls it inside :func:`apps.common.prepared.building`, which renames the folder into place.
    """
    if engine not in ENGINE_SPECS:
        raise UserError(f"--engine: {engine!r} is no synthesiser; choose {', '.join(ENGINE_SPECS)} "
                        "(asterisk's recordings are laid out by build_recorded)")
    if engine == "klatt":
        klatt.check_words(words)
    clips, _, info = plan_clips(words, per_word, seed, noise, engine=engine)
    for word in words:
        (staging / word).mkdir(parents=True, exist_ok=True)
    (staging / "_background_noise_").mkdir()
    start = time.perf_counter()

    def work(group: list[Clip]) -> int:
        raw = speak_festival(group) if engine == "festival" else [speak(c, engine) for c in group]
        for clip, (wav, rate) in zip(group, raw):
            _write(staging / clip.relpath, finish(clip, wav, rate, engine))
        return len(group)

    with Progress() as progress, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        task = progress.add_task(f"{engine}: {len(clips)} clips, {jobs} jobs", total=len(clips))
        for n in pool.map(work, batches(clips, engine)):
            progress.advance(task, n)
    seconds = time.perf_counter() - start
    for i, kind in enumerate(NOISE_FILES):
        _write(staging / "_background_noise_" / f"{kind}.wav", background_noise(kind, noise_seconds, seed + i))
    lists = {"validation": [], "testing": []}
    for clip in clips:
        split = info[clip.speaker]["split"]
        if split in lists:
            lists[split].append(clip.relpath)
    for split, lines in lists.items():
        (staging / f"{split}_list.txt").write_text("".join(f"{line}\n" for line in sorted(lines)))
    with open(staging / "voices.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["speaker", "voice", "split", "pitch", "speed"])
        for sid in sorted(info):
            writer.writerow([sid, info[sid]["voice"], info[sid]["split"], info[sid]["pitch"], info[sid]["speed"]])
    kind = {"espeak-ng": "accent+variant pairs", "klatt": "rule-drawn voices"}.get(engine, "voice@warp pairs")
    (staging / "README.md").write_text(
        f"Offline stand-in for Speech Commands v0.02, spoken by {engine} (ssm-suite).\n"
        f"words: {' '.join(words)}; {per_word} clips per word; seed {seed}; noise {noise}.\n"
        f"Speakers are {engine} {kind} (voices.csv); splits are speaker-disjoint.\n")
    return {"clips": len(clips), "seconds": seconds, "clips_per_s": len(clips) / max(seconds, 1e-9)}


def centre(wav: np.ndarray) -> np.ndarray:
    """A 16 kHz recording (T,) centred in one second (16000,): zero-padded both sides, or its middle second."""
    if wav.size >= SAMPLE_RATE:
        start = (wav.size - SAMPLE_RATE) // 2
        return wav[start:start + SAMPLE_RATE].astype(np.float32)
    out = np.zeros(SAMPLE_RATE, np.float32)
    start = (SAMPLE_RATE - wav.size) // 2
    out[start:start + wav.size] = wav
    return out


def build_recorded(staging: Path, source: Path, words: Sequence[str]) -> dict[str, float]:
    """Write Asterisk's recorded digits (``source/<d>.wav``) as a test-only set of ``words`` (digits) in ``staging``.

    Each recording is read at its own rate, resampled to 16 kHz, trimmed of leading and trailing
    silence and centred in one second, its level kept.  One speaker, one clip per word, all in the
    test split.
    """
    digits = {w: str(i) for i, w in enumerate(WORD_SETS["sc09"])}
    if any(w not in digits for w in words):
        raise UserError(f"--engine asterisk has the digits only: use --words sc09 or some of "
                        f"{', '.join(WORD_SETS['sc09'])}, got {', '.join(words)}")
    sid = speaker_id("asterisk:en_US_f_Allison")
    start = time.perf_counter()
    rels = []
    for word in words:
        path = source / f"{digits[word]}.wav"
        try:
            wav, rate = soundfile.read(str(path), dtype="float32")
        except (soundfile.SoundFileError, OSError) as e:  # a missing, unreadable or non-audio file
            raise UserError(f"--engine asterisk: cannot read {path} ({str(e).splitlines()[0]}); install "
                            "asterisk-core-sounds-en-wav (`sudo apt-get install asterisk-core-sounds-en-wav`) or "
                            "point --source at a folder holding 0.wav ... 9.wav") from e
        wav = wav.mean(axis=1) if wav.ndim > 1 else wav
        g = math.gcd(SAMPLE_RATE, rate)
        wav = trim_silence(resample_poly(wav, SAMPLE_RATE // g, rate // g), SAMPLE_RATE)
        if wav.size == 0:
            raise UserError(f"--engine asterisk: {path} is silent")
        (staging / word).mkdir(parents=True)
        rels.append(f"{word}/{sid}_nohash_0.wav")
        _write(staging / rels[-1], np.clip(centre(wav), -1.0, 1.0))
    (staging / "validation_list.txt").write_text("")
    (staging / "testing_list.txt").write_text("".join(f"{r}\n" for r in sorted(rels)))
    (staging / "voices.csv").write_text(f"speaker,voice,split,pitch,speed\n{sid},asterisk:Allison,testing,,\n")
    (staging / "README.md").write_text(
        f"Test-only probe in the Speech Commands v0.02 layout: {len(words)} digits spoken by one real person,\n"
        f"Allison Smith (Asterisk core sounds, en_US_f_Allison, CC-BY-SA-3.0; 8 kHz telephone recordings\n"
        f"resampled to 16 kHz), copied by ssm-suite from\n{source}.\nOne clip per word, every clip in "
        "testing_list.txt (no training split).  Score an SC09 model on it with its own input statistics:\n"
        "ssm speech zero-shot --ckpt CKPT --rates 16000 --data-root DIR (DIR: this folder).\n"
        "A probe, not a benchmark.\n")
    seconds = time.perf_counter() - start
    return {"clips": len(rels), "seconds": seconds, "clips_per_s": len(rels) / max(seconds, 1e-9)}


def resolve_words(text: str) -> list[str]:
    """``sc35``/``sc10``/``sc09`` or a comma-separated list of words."""
    if text.lower() in WORD_SETS:
        return list(WORD_SETS[text.lower()])
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if not words or any(not w.isalpha() for w in words):
        raise UserError(f"--words takes sc35, sc10, sc09 or comma-separated words, got {text!r}")
    return words


def prepare_speech_commands(argv: list[str]) -> None:
    """``ssm speech prepare --out DIR --words sc35|sc10|sc09 --per-word N``."""
    p = argparse.ArgumentParser(prog="ssm speech prepare",
                                description="Speak the Speech Commands words with espeak-ng, flite, festival or klatt "
                                            "(or lay out recorded digits) in the v0.02 layout.")
    p.add_argument("--out", required=True, help="output folder, e.g. data/speech_commands_synth")
    p.add_argument("--words", help="sc35, sc10, sc09 or comma-separated words (default sc35; sc09 for asterisk)")
    p.add_argument("--per-word", type=int, default=300,
                   help="clips per word (default 300: the real recipes; 12 is enough for a demo)")
    p.add_argument("--engine", default="espeak-ng", choices=ENGINES,
                   help="the synthesiser: espeak-ng (default), or flite, festival or klatt (ssm-suite's own "
                        "rule-based formant synthesiser), independent ones with other voices (train on some, test "
                        "on another); asterisk: ten digits recorded by one real person "
                        "(a test-only SC09 probe, from asterisk-core-sounds-en-wav)")
    p.add_argument("--source", default=ASTERISK_DIGITS,
                   help=f"--engine asterisk: the folder of 0.wav ... 9.wav (default {ASTERISK_DIGITS})")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="std of light white noise added to each clip (e.g. 0.005)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel synthesiser processes")
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    out = Path(a.out)
    if not (a.noise >= 0 and math.isfinite(a.noise)):
        raise UserError(f"--noise must be a finite number >= 0, got {a.noise}")
    if a.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {a.jobs}")
    recorded = a.engine == "asterisk"
    if not recorded and a.per_word < 3:  # said before an existing folder is looked at, not only when building
        raise UserError(f"--per-word must be at least 3 (one clip per split), got {a.per_word}")
    words = resolve_words(a.words or ("sc09" if recorded else "sc35"))
    if recorded:
        args = {"words": words, "engine": a.engine, "source": str(Path(a.source).resolve())}
    else:
        args = {"words": words, "per_word": a.per_word, "seed": a.seed, "noise": a.noise}
        if a.engine != "espeak-ng":  # (keeps the manifests of earlier espeak-ng folders valid)
            args["engine"] = a.engine
    if already_prepared(out, "ssm speech prepare", args, a.force):
        return
    with building(out, "ssm speech prepare", args) as staging:
        if recorded:
            stats = build_recorded(staging, Path(a.source), words)
        else:
            stats = build(staging, words, a.per_word, a.seed, a.noise, a.jobs, engine=a.engine)
    if recorded:
        print(f"wrote {stats['clips']} recorded digits of one speaker (a test-only probe, not a benchmark) under {out}")
    else:
        print(f"wrote {stats['clips']} clips of {len(words)} words under {out} "
              f"in {stats['seconds']:.1f} s ({stats['clips_per_s']:.0f} clips/s, {a.jobs} jobs)")
    for name in ("validation_list.txt", "testing_list.txt", "voices.csv") + ((), ("_background_noise_",))[not recorded]:
        print(f"wrote {out / name}")
