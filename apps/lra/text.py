"""Byte-level text for Long Range Arena: IMDB reviews (Text) and ACL Anthology pairs (Retrieval).

LRA (Tay et al. 2021, Sec. 3.2 and 3.3) reads both tasks as bytes: every byte is a token, no
tokenizer.  :func:`byte_ids` maps a byte ``b`` to id ``b + 1`` (0 is padding).

* **Text** (Maas et al. 2011, IMDB): the unpacked ``aclImdb_v1.tar.gz``,
  ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``; label 1 for ``pos``, 0 for ``neg``
  (``unsup/`` is ignored).  IMDB has no validation split: like LRA and S4, ``val`` reads ``test``.
* **Retrieval** (Radev et al. 2013, the ACL Anthology Network): LRA's released
  ``new_aan_pairs.{train,eval,test}.tsv``, tab-separated without header or quoting, columns
  ``label id1 id2 text1 text2`` (label 1: one paper cites the other); our split ``val`` is ``eval``.

Nothing is downloaded: a missing file is an error naming it.  :func:`write_tiny_imdb` and
:func:`write_tiny_aan` write tiny made-up trees in these layouts for tests and demos.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from apps.common.errors import UserError

#: IMDB class folders and their labels
IMDB_CLASSES = {"neg": 0, "pos": 1}
#: our split name -> the file's split name
AAN_SPLITS = {"train": "train", "val": "eval", "test": "test"}
#: columns of the AAN files (LRA's names)
AAN_COLUMNS = ("label", "id1", "id2", "text1", "text2")


def byte_ids(text: bytes, max_len: int) -> list[int]:
    """Token ids of ``text``: each byte + 1 (so 0 stays padding), the first ``max_len`` bytes."""
    return (np.frombuffer(text[:max_len], dtype=np.uint8).astype(np.int64) + 1).tolist()


def _imdb_folder(root: Path) -> Path:
    root = Path(root)
    folder = root / "aclImdb" if (root / "aclImdb").is_dir() else root
    if not any((folder / s).is_dir() for s in ("train", "test")):
        raise UserError(f"IMDB not found: neither {root / 'aclImdb'} nor {root} holds train/ or test/ "
                        f"(unpack aclImdb_v1.tar.gz there; nothing is downloaded)")
    return folder


def _review_key(path: Path) -> tuple[int, str]:
    stem = path.stem.split("_")[0]
    return (int(stem) if stem.isdigit() else -1, path.name)


def read_imdb(root: Path, split: str) -> list[tuple[bytes, int]]:
    """``[(review bytes, label), ...]`` of an IMDB split (``train``, ``test``; ``val`` reads ``test``).

    ``root`` is the folder holding ``aclImdb`` or ``aclImdb`` itself.  Order: all ``neg`` then all
    ``pos`` reviews, each by review id (the number before ``_``), so every read is the same.
    """
    if split not in ("train", "val", "test"):
        raise UserError(f"unknown IMDB split {split!r}: use train, val or test")
    folder = _imdb_folder(root) / ("test" if split == "val" else split)
    rows: list[tuple[bytes, int]] = []
    for name, label in IMDB_CLASSES.items():
        directory = folder / name
        if not directory.is_dir():
            raise UserError(f"IMDB folder not found: {directory} (expected aclImdb/{folder.name}/{{pos,neg}}/*.txt)")
        files = sorted(directory.glob("*.txt"), key=_review_key)
        if not files:
            raise UserError(f"IMDB folder {directory} holds no .txt reviews (expected <id>_<rating>.txt files)")
        for path in files:
            try:
                rows.append((path.read_bytes(), label))
            except OSError as e:
                raise UserError(f"cannot read IMDB review {path}: {e.strerror or e}; fix or remove it") from e
    return rows


def read_aan(root: Path, split: str) -> list[tuple[bytes, bytes, int]]:
    """``[(text1, text2, label), ...]`` from LRA's ``root/new_aan_pairs.<split>.tsv`` (``val`` is ``eval``).

    Each line holds ``label id1 id2 text1 text2`` separated by tabs; the label (written ``0``/``1``
    or ``0.0``/``1.0``) must be 0 or 1.  A missing file or a bad line is a UserError naming it.
    """
    if split not in AAN_SPLITS:
        raise UserError(f"unknown AAN split {split!r}: use {', '.join(AAN_SPLITS)}")
    path = Path(root) / f"new_aan_pairs.{AAN_SPLITS[split]}.tsv"
    if not path.is_file():
        raise UserError(f"AAN file not found: {path} (put LRA's new_aan_pairs.{{train,eval,test}}.tsv in "
                        f"{Path(root)}; nothing is downloaded)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read AAN file {path}: {e.strerror or e}") from e
    rows = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        fields = line.split(b"\t")
        if len(fields) != len(AAN_COLUMNS):
            raise UserError(f"{path} line {number}: expected {len(AAN_COLUMNS)} tab-separated columns "
                            f"({' '.join(AAN_COLUMNS)}), found {len(fields)}; the file is damaged")
        try:
            label = float(fields[0])
        except ValueError:
            label = -1.0
        if label not in (0.0, 1.0):
            raise UserError(f"{path} line {number}: label {fields[0][:20]!r} is not 0 or 1; the file is damaged")
        rows.append((fields[3], fields[4], int(label)))
    if not rows:
        raise UserError(f"{path} holds no pairs")
    return rows


# ---------------------------------------------------------------------------------------------
# tiny made-up trees for tests and demos (NOT the data)

_WORDS = {
    "pos": ["wonderful", "moving", "brilliant", "superb", "charming", "gripping", "delightful"],
    "neg": ["dreadful", "boring", "clumsy", "awful", "tedious", "lifeless", "painful"],
    "any": ["the", "film", "plot", "actor", "scene", "and", "was", "a", "with", "story", "ending", "music"],
}


def _sentence(rng: np.random.Generator, mood: str, words: int) -> str:
    pool = _WORDS["any"] * 2 + _WORDS[mood]
    return " ".join(pool[i] for i in rng.integers(0, len(pool), words)).capitalize() + "."


def _fresh(target: Path) -> None:
    if target.exists():
        raise UserError(f"{target} already exists; the tiny writer never overwrites: choose another folder")


def write_tiny_imdb(root: Path, n_per_class: int = 4, seed: int = 0) -> Path:
    """Write a tiny MADE-UP review tree ``root/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``.

    Not IMDB: a few template sentences with positive or negative words, for tests and demos of
    the layout only.  Returns ``root/aclImdb``; refuses an existing one.
    """
    root = Path(root)
    target = root / "aclImdb"
    _fresh(target)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix=".aclImdb.building-", dir=root))
    for split in ("train", "test"):
        for mood in ("neg", "pos"):
            folder = tmp / split / mood
            folder.mkdir(parents=True)
            for i in range(n_per_class):
                rating = int(rng.integers(7, 11)) if mood == "pos" else int(rng.integers(1, 5))
                text = " ".join(_sentence(rng, mood, int(rng.integers(6, 14))) for _ in range(3))
                (folder / f"{i}_{rating}.txt").write_text(text)
    os.rename(tmp, target)
    return target


def write_tiny_aan(root: Path, n: int = 8, seed: int = 0) -> Path:
    """Write tiny MADE-UP ``root/new_aan_pairs.{train,eval,test}.tsv`` files of ``n`` pairs each.

    Not the ACL Anthology: pairs of template "abstracts"; label 1 when both share a topic word.
    Both labels occur (alternating).  Returns ``root``; refuses existing files.
    """
    root = Path(root)
    topics = ["parsing", "translation", "summarization", "tagging", "retrieval", "dialogue"]
    paths = {s: root / f"new_aan_pairs.{s}.tsv" for s in AAN_SPLITS.values()}
    for path in paths.values():
        _fresh(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, path in paths.items():
        lines = []
        for i in range(n):
            label = i % 2
            first = int(rng.integers(len(topics)))
            second = first if label else (first + int(rng.integers(1, len(topics)))) % len(topics)
            texts = [f"We study {topics[t]} with a {w} model. " + _sentence(rng, "any", int(rng.integers(5, 12)))
                     for t, w in ((first, "neural"), (second, "statistical"))]
            lines.append(f"{label}\t{split}-{i}a\t{split}-{i}b\t{texts[0]}\t{texts[1]}\n")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(lines))
        os.replace(tmp, path)
    return root
