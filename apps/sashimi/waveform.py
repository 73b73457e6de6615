"""Waveform data for SaShiMi: 8-bit quantisation, fixed-length chunks, and the LightningDataModule.

* Quantisation (:func:`quantize` / :func:`dequantize`): ``mu-law`` (mu = 255, as WaveNet and
  SaShiMi) or ``linear``, 2**bits levels.  ``dequantize(quantize(x))`` is within half a level of
  ``x``, and ``quantize(dequantize(q)) == q``.
* :func:`chunk`: cut a waveform into fixed-length examples; the last piece is zero-padded
  (with a validity mask) or dropped.
* :class:`WaveformData`: folders of audio files at any rate (resampled to 16 kHz mono by
  :func:`apps.common.audio.load_audio`), ``ROOT/{train,val,test}/**`` or one folder split by file
  fractions, or the Speech Commands layout restricted to the digits (SC09).

Items are ``(tokens (L,) long, mask (L,) bool)``; the model predicts token t from tokens < t.
Goel, Gu, Donahue, Re (2022), "It's Raw! Audio Generation with State-Space Models", Sec. 4.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from rich.progress import Progress
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from apps.common.audio import load_audio
from apps.common.data import SplitDataModule
from apps.common.errors import UserError

QUANTIZATIONS = ("mu-law", "linear")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
SPLITS = ("train", "val", "test")
LAST_CHUNK = ("pad", "drop")


def _check(method: str, bits: int) -> int:
    if method not in QUANTIZATIONS:
        raise UserError(f"data.quantization: unknown {method!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if not 1 <= bits <= 16:
        raise UserError(f"data.bits must be between 1 and 16, got {bits}")
    return 2**bits


def quantize(x: Tensor, method: str = "mu-law", bits: int = 8) -> Tensor:
    """Waveform ``x`` in [-1, 1] (any shape) -> integer levels in ``[0, 2**bits)`` (long, same shape)."""
    levels = _check(method, bits)
    x = x.clamp(-1.0, 1.0)
    if method == "mu-law":
        mu = levels - 1
        x = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return torch.round((x + 1) / 2 * (levels - 1)).long().clamp_(0, levels - 1)


def dequantize(q: Tensor, method: str = "mu-law", bits: int = 8) -> Tensor:
    """Integer levels ``q`` in ``[0, 2**bits)`` -> waveform in [-1, 1] (float32, same shape)."""
    levels = _check(method, bits)
    y = q.float() / (levels - 1) * 2 - 1
    if method == "mu-law":
        mu = levels - 1
        y = torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu
    return y


def silence_level(method: str = "mu-law", bits: int = 8) -> int:
    """The level of a zero sample (the start token and the padding)."""
    return int(quantize(torch.zeros(()), method, bits))


def chunk(wav: Tensor, length: int, last: str = "pad") -> tuple[Tensor, Tensor]:
    """Cut ``wav`` (T,) into ``(chunks (n, length), mask (n, length) bool)``.

    The final piece shorter than ``length`` is zero-padded (``last="pad"``; its mask marks the
    real samples) or dropped (``last="drop"``).  A clip shorter than ``length`` gives one padded
    chunk or none.
    """
    if last not in LAST_CHUNK:
        raise UserError(f"data.last: unknown {last!r}; choose one of {', '.join(LAST_CHUNK)}")
    if length < 1:
        raise UserError(f"data.segment_length must be positive, got {length}")
    T = wav.shape[-1]
    n = T // length if last == "drop" else math.ceil(T / length)
    padded = torch.zeros(n * length, dtype=wav.dtype)
    keep = min(T, n * length)
    padded[:keep] = wav[:keep]
    mask = torch.zeros(n * length, dtype=torch.bool)
    mask[:keep] = True
    return padded.view(n, length), mask.view(n, length)


class TokenSet(Dataset):
    """Quantised chunks ``tokens (n, L)`` uint8/int16 and ``mask (n, L)`` -> ``(tokens long, mask)``."""

    def __init__(self, tokens: Tensor, mask: Tensor) -> None:
        self.tokens, self.mask = tokens, mask

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.tokens[i].long(), self.mask[i]


def audio_files(folder: Path) -> list[Path]:
    """Every audio file under ``folder`` (recursively), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _item_path(item: object) -> Path:
    if isinstance(item, (tuple, list)):
        return Path(item[0])
    return Path(getattr(item, "path", item))


class WaveformData(SplitDataModule):
    """Quantised fixed-length waveform chunks for autoregressive training.

    Args:
        root: data folder.
        dataset: ``folder`` (``ROOT/{train,val,test}/**/*.wav``; without those sub-folders the sorted
            files of ``ROOT`` are split by ``val_fraction`` / ``test_fraction``) or ``sc09`` (the Speech
            Commands v0.02 layout, the ten digit words, its own split lists).
        sample_rate: every file is resampled to this rate, mono.
        segment_length: samples per example (SC09: 16000, one clip).
        last: ``pad`` or ``drop`` the last short piece of each file.
        quantization: ``mu-law`` or ``linear``; ``bits``: levels are ``2**bits``.
        val_fraction, test_fraction: the file split of a flat folder.
        max_files: read at most this many files per split (quick runs); None reads all.
        batch_size, num_workers: DataLoader settings.
    """

    def __init__(
        self,
        root: str = "data/piano",
        dataset: str = "folder",
        sample_rate: int = 16000,
        segment_length: int = 16000,
        last: str = "pad",
        quantization: str = "mu-law",
        bits: int = 8,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        max_files: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in ("folder", "sc09"):
            raise UserError(f"data.dataset: unknown {dataset!r}; choose folder or sc09")
        _check(quantization, bits)
        if last not in LAST_CHUNK:
            raise UserError(f"data.last: unknown {last!r}; choose one of {', '.join(LAST_CHUNK)}")
        self.root, self.dataset = Path(root), dataset
        self.sample_rate, self.segment_length, self.last = sample_rate, segment_length, last
        self.quantization, self.bits = quantization, bits
        self.val_fraction, self.test_fraction, self.max_files = val_fraction, test_fraction, max_files
        self.batch_size, self.num_workers = batch_size, num_workers
        self.sets: dict[str, TokenSet] = {}

    @property
    def n_classes(self) -> int:
        return 2**self.bits

    def split_files(self) -> dict[str, list[Path]]:
        """The audio files of each split."""
        if not self.root.is_dir():
            hint = ("ssm speech prepare --words sc09 --out " if self.dataset == "sc09"
                    else "ssm sashimi prepare piano --out ")
            raise UserError(f"data.root: folder {self.root} not found; build a stand-in with `{hint}{self.root}`")
        if self.dataset == "sc09":
            from apps.common.speech_commands import WORD_SETS, speech_commands_items

            split_names = {"train": "train", "val": "val", "test": "test"}
            files = {s: [_item_path(i) for i in speech_commands_items(self.root, WORD_SETS["sc09"], split_names[s])]
                     for s in SPLITS}
        elif all((self.root / s).is_dir() for s in ("train", "val")):
            files = {s: audio_files(self.root / s) for s in SPLITS}
            if not files["test"]:
                files["test"] = files["val"]
        else:
            found = audio_files(self.root)
            n_val = max(1, round(len(found) * self.val_fraction)) if len(found) > 2 else 0
            n_test = max(1, round(len(found) * self.test_fraction)) if len(found) > 2 else 0
            n_train = len(found) - n_val - n_test
            files = {"train": found[:n_train], "val": found[n_train:n_train + n_val] or found[:1],
                     "test": found[n_train + n_val:] or found[:1]}
        if not files["train"]:
            raise UserError(f"data.root: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {self.root}")
        if self.max_files:
            files = {s: f[: self.max_files] for s, f in files.items()}
        return files

    def load_split(self, files: list[Path], name: str = "") -> TokenSet:
        """Read, resample, chunk and quantise ``files`` into a :class:`TokenSet`."""
        tokens, masks = [], []
        dtype = torch.uint8 if self.bits <= 8 else torch.int16
        with Progress(transient=True) as progress:
            task = progress.add_task(f"reading {name} audio", total=len(files))
            for path in files:
                wav, _ = load_audio(path, self.sample_rate)
                pieces, mask = chunk(wav, self.segment_length, self.last)
                q = quantize(pieces, self.quantization, self.bits)
                q[~mask] = silence_level(self.quantization, self.bits)
                tokens.append(q.to(dtype))
                masks.append(mask)
                progress.advance(task)
        if not tokens or sum(t.shape[0] for t in tokens) == 0:
            raise UserError(f"data: the {name} split of {self.root} gives no examples of {self.segment_length} "
                            "samples; lower data.segment_length or use data.last: pad")
        return TokenSet(torch.cat(tokens), torch.cat(masks))

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        for split, files in self.split_files().items():
            self.sets[split] = self.load_split(files, split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.sets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, drop_last=False)


