"""``ssm sashimi prepare piano``: the offline piano stand-in for SaShiMi's music datasets.

Bach chorales from the music21 corpus (shipped inside the music21 wheel) are written as MIDI with
every part on the acoustic grand piano (General MIDI program 0), rendered by fluidsynth with the
TimGM6mb soundfont, and stored as 16 kHz mono 16-bit WAVs in the folder layout that
:class:`apps.sashimi.waveform.WaveformData` reads::

    OUT/train/bwv1.6.wav  OUT/val/...  OUT/test/...  OUT/manifest.csv

Chorales are drawn in a seeded order until ``--minutes`` of audio are rendered; every tenth one
goes to val (the 2nd, 12th, ...) and every tenth to test (the 3rd, 13th, ...), so the split is
deterministic and even a one-minute set has all three splits.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.progress import Progress

from apps.common.audio import load_audio, save_wav
from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.prepared import already_prepared, building
from apps.common.report import write_csv

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
SAMPLE_RATE = 16000


def chorale_paths() -> list[Path]:
    """The Bach chorales of the music21 corpus (MusicXML scores, not the harmonic analyses), sorted."""
    from music21 import corpus

    return sorted(Path(p) for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".xml")))


def chorale_midi(source: Path, midi_path: Path) -> None:
    """Parse one chorale and write it as MIDI with every part on the piano (program 0)."""
    from music21 import converter, instrument

    score = converter.parse(str(source))
    for part in score.parts:
        for old in part.recurse().getElementsByClass(instrument.Instrument):
            old.activeSite.remove(old)
        part.insert(0, instrument.Piano())
    score.write("midi", fp=str(midi_path))


def render(midi_path: Path, wav_path: Path, soundfont: Path = SOUNDFONT, sample_rate: int = SAMPLE_RATE) -> None:
    """fluidsynth ``midi_path`` -> ``wav_path`` (16-bit, ``sample_rate``)."""
    cmd = ["fluidsynth", "-ni", "-g", "0.6", "-r", str(sample_rate), "-F", str(wav_path), str(soundfont), str(midi_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode or not wav_path.is_file():
        raise UserError(f"fluidsynth failed on {midi_path.name}: {result.stderr.strip()[-300:]}")


def split_of(index: int) -> str:
    """Deterministic split of the ``index``-th rendered chorale: 8 of 10 train, 1 val, 1 test."""
    return {1: "val", 2: "test"}.get(index % 10, "train")


def prepare_piano(argv: list[str]) -> None:
    """``ssm sashimi prepare piano --out data/piano --minutes M [--seed S] [--force]``."""
    p = argparse.ArgumentParser(prog="ssm sashimi prepare piano", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/piano", help="output folder (train/val/test WAVs)")
    p.add_argument("--minutes", type=float, default=10.0, help="total minutes of audio to render")
    p.add_argument("--seed", type=seed_int, default=0, help="order in which the chorales are drawn")
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    args = p.parse_args(argv)
    if not (0 < args.minutes < float("inf")):
        raise UserError(f"--minutes must be a positive finite number, got {args.minutes}")
    if shutil.which("fluidsynth") is None:
        raise UserError("fluidsynth is not installed; run `make system-deps` (Debian: apt-get install fluidsynth)")
    if not SOUNDFONT.is_file():
        raise UserError(f"soundfont {SOUNDFONT} not found; run `make system-deps` (Debian: timgm6mb-soundfont)")
    final = Path(args.out)
    settings = {"minutes": args.minutes, "seed": args.seed}
    if already_prepared(final, "ssm sashimi prepare piano", settings, args.force):
        return
    with building(final, "ssm sashimi prepare piano", settings) as out:
        rows, total, counts = _render_set(out, args.minutes, args.seed)
    print(f"wrote {len(rows)} piano renders ({total / SAMPLE_RATE / 60:.1f} min; train {counts['train']}, "
          f"val {counts['val']}, test {counts['test']}) under {final}/{{train,val,test}} and {final}/manifest.csv")


def _render_set(out: Path, minutes: float, seed: int) -> tuple[list[list[str]], int, dict[str, int]]:
    """Render chorales into ``out`` until ``minutes`` of audio (and a val and a test piece) are there."""
    sources = chorale_paths()
    random.Random(seed).shuffle(sources)
    target, total, rows = minutes * 60 * SAMPLE_RATE, 0, []
    counts = {"train": 0, "val": 0, "test": 0}
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        task = progress.add_task("rendering chorales", total=int(target))
        for source in sources:
            if total >= target and counts["val"] and counts["test"]:
                break
            index = len(rows)
            split = split_of(index)
            midi, raw = Path(tmp) / "piece.mid", Path(tmp) / "piece.wav"
            try:
                chorale_midi(source, midi)
            except Exception:  # noqa: BLE001 -- a corpus file music21 cannot convert is skipped
                continue
            render(midi, raw)
            wav, _ = load_audio(raw, SAMPLE_RATE)
            name = source.name.rsplit(".", 1)[0] + ".wav"
            save_wav(out / split / name, wav, SAMPLE_RATE)
            total += wav.shape[0]
            counts[split] += 1
            rows.append([f"{split}/{name}", split, source.name, f"{wav.shape[0] / SAMPLE_RATE:.2f}"])
            progress.update(task, completed=min(total, int(target)))
    write_csv(out / "manifest.csv", ["file", "split", "chorale", "seconds"], rows)
    return rows, total, counts
