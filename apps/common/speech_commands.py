"""Speech Commands v0.02 (Warden 2018) in its real layout, read by the apps that use it (speech, sashimi).

Layout (written by ``ssm speech prepare``)::

    <root>/<word>/<speaker>_nohash_<k>.wav     1 s, 16 kHz mono
    <root>/validation_list.txt                 lines "word/file.wav"
    <root>/testing_list.txt                    lines "word/file.wav"; training = every other file
    <root>/_background_noise_/*.wav            long noise recordings (augmentation)

Word sets as in the S4 / S4D / S5 papers: SC35 (all 35 words), SC10 (yes ... go) and SC09 (the
digits, SaShiMi's generation benchmark).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import soundfile

from apps.common.errors import UserError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WORD_SETS: dict[str, list[str]] = {
    "sc35": ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
             "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
             "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero"],
    "sc10": ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"],
    "sc09": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
}
SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "testing", "testing": "testing"}


def resolve_word_set(words: str | Sequence[str]) -> list[str]:
    """``"sc35"``/``"sc10"``/``"sc09"`` or an explicit list of words."""
    if isinstance(words, str):
        if words.lower() not in WORD_SETS:
            raise UserError(f"data.words: unknown word set {words!r}; choose sc35, sc10, sc09 or give a list")
        return list(WORD_SETS[words.lower()])
    if not words:
        raise UserError("data.words is empty; choose sc35, sc10, sc09 or give a list of words")
    if not all(isinstance(w, str) for w in words):
        raise UserError(f"data.words must be strings, got {list(words)}: quote yes / no / on / off in YAML "
                        "(a bare yes is read as true)")
    return list(words)


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise UserError(f"{path} not found: {root} is not in the Speech Commands v0.02 layout "
                        f"(build a stand-in with `ssm speech prepare --out {root}`)")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def readable(items: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """The items whose file opens and holds samples; each other one is skipped with a warning naming it."""
    kept = []
    for path, label in items:
        try:
            frames = soundfile.info(str(path)).frames
        except Exception as e:  # noqa: BLE001 -- soundfile raises several types for a bad file
            log.warning("skipping unreadable audio file %s (%s)", path, str(e).splitlines()[0])
            continue
        if frames <= 0:
            log.warning("skipping empty audio file %s", path)
            continue
        kept.append((path, label))
    return kept


def speech_commands_items(root: str | Path, words: str | Sequence[str], split: str,
                          check: bool = True) -> list[tuple[Path, int]]:
    """``(wav path, label)`` pairs of one split, labels indexing ``words`` (sorted by path).

    Args:
        root: the dataset folder (real Speech Commands v0.02 or the prepared stand-in).
        words: ``sc35``, ``sc10``, ``sc09`` or a list; the label is the word's index in it.
        split: ``train``, ``validation`` (``val``) or ``test`` (``testing``).
        check: skip unreadable or empty files with a warning naming each.
    Raises:
        UserError: missing root, split list or word folder, or a split with no readable file.
    """
    root = Path(root)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose train, validation or test")
    if not root.is_dir():
        raise UserError(f"data.root not found: {root} (build a stand-in with "
                        f"`ssm speech prepare --out {root}`)")
    words = resolve_word_set(words)
    held = {"validation": _read_list(root, "validation_list.txt"), "testing": _read_list(root, "testing_list.txt")}
    name = SPLITS[split]
    items = []
    for label, word in enumerate(words):
        folder = root / word
        if not folder.is_dir():
            raise UserError(f"word folder {folder} not found: {root} lacks {word!r} (prepare it with the "
                            f"matching --words, or choose another data.words)")
        for path in sorted(folder.glob("*.wav")):
            rel = f"{word}/{path.name}"
            in_split = rel in held[name] if name != "train" else rel not in held["validation"] | held["testing"]
            if in_split:
                items.append((path, label))
    if check:
        items = readable(items)
    if not items:
        raise UserError(f"the {name} split of {root} has no readable audio for the words {', '.join(words)}")
    return items
