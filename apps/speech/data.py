"""Speech Commands v0.02 (Warden 2018) as a LightningDataModule, for the SSM audio classifiers.

Layout read here (and written by ``ssm speech prepare``)::

    <root>/<word>/<speaker>_nohash_<k>.wav     1 s, 16 kHz mono
    <root>/validation_list.txt                 lines "word/file.wav"
    <root>/testing_list.txt                    lines "word/file.wav"; training = every other file
    <root>/_background_noise_/*.wav            long noise recordings (augmentation)

Subsets as in the S4 / S4D / S5 papers: SC35 (all 35 words), SC10 (yes ... go) and SC09 (the
digits, SaShiMi's generation benchmark).  Inputs are the raw waveform zero-padded or cropped to
one second, ``(L, 1)`` with L = sample_rate, or MFCCs ``(frames, n_mfcc)`` (optionally less the clip's own
cepstral mean, ``mfcc_cmn``); all normalised by training-set statistics.  A lower ``sample_rate`` feeds the same clips at that rate (zero-shot
resolution change, S4 Sec. 4.4): ``proper`` low-passes then decimates, ``naive`` keeps every k-th
sample.

``data.root`` may name several folders (a YAML list): their clips are merged split by split, each
folder keeping its own train / validation / test lists, so a model can train on two synthesisers'
stand-ins and be tested on a third.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from apps.common.audio import AudioError, load_audio, resample
from apps.common.data import SplitDataModule
from apps.common.errors import UserError
from apps.common.speech_commands import SAMPLE_RATE, resolve_word_set, speech_commands_items
from apps.speech.augment import Augmentation, View

log = logging.getLogger(__name__)

RESAMPLE_MODES = ("proper", "naive")
FEATURES = ("raw", "mfcc", "mfcc_cmn")


def fit_length(wav: Tensor, length: int) -> Tensor:
    """Zero-pad (at the end) or crop a (T,) waveform to (length,)."""
    return F.pad(wav, (0, length - wav.shape[0])) if wav.shape[0] < length else wav[:length]


def change_rate(wav: Tensor, sample_rate: int, mode: str) -> Tensor:
    """A one-second 16 kHz (..., 16000) clip at ``sample_rate``: ``proper`` (low-pass, decimate) or ``naive``."""
    if sample_rate == SAMPLE_RATE:
        return wav
    if mode == "proper":
        return resample(wav, SAMPLE_RATE, sample_rate)
    step = SAMPLE_RATE // sample_rate
    if step * sample_rate != SAMPLE_RATE:
        raise UserError(f"naive decimation needs data.sample_rate to divide {SAMPLE_RATE}, got {sample_rate}")
    return wav[..., ::step]


def cepstral_mean_removed(x: Tensor) -> Tensor:
    """MFCCs (T, C) less their mean over the louder half of the frames (by c0): the word's, not the silence's."""
    loud = x[:, 0] >= x[:, 0].median()
    return x - x[loud].mean(0)


class SpeechCommandsDataset(Dataset):
    """Clips of one split as ``(features (L, C), label)``; see :class:`SpeechCommandsData` for the options."""

    def __init__(self, items: list[tuple[Path, int]], sample_rate: int = SAMPLE_RATE, resample_mode: str = "proper",
                 features: str = "raw", n_mfcc: int = 20, mean: Tensor | None = None, std: Tensor | None = None,
                 noise: list[Tensor] | None = None, noise_prob: float = 0.0, noise_level: float = 0.1,
                 augmentation: Augmentation | None = None, lowpass: int | None = None,
                 views: tuple[View, ...] = ()) -> None:
        self.items, self.sample_rate, self.resample_mode = items, sample_rate, resample_mode
        self.views = tuple(views)
        self.augmentation, self.lowpass = augmentation, lowpass
        self.features, self.mean, self.std = features, mean, std
        self.noise, self.noise_prob, self.noise_level = noise or [], noise_prob, noise_level
        self.mfcc = None
        if features != "raw":
            import torchaudio.transforms as T

            self.mfcc = T.MFCC(sample_rate, n_mfcc=n_mfcc, melkwargs=dict(
                n_fft=int(0.025 * sample_rate), hop_length=int(0.01 * sample_rate), n_mels=40))

    def __len__(self) -> int:
        return len(self.items)

    def waveform(self, i: int) -> Tensor:
        """Clip ``i`` as one second at 16 kHz (16000,), augmented and with background noise when training."""
        path = self.items[i][0]
        wav = fit_length(load_audio(path, SAMPLE_RATE)[0], SAMPLE_RATE)
        if self.augmentation is not None:
            wav = self.augmentation(wav, SAMPLE_RATE)
        if self.noise and random.random() < self.noise_prob:
            clip = self.noise[random.randrange(len(self.noise))]
            start = random.randrange(max(1, clip.shape[0] - SAMPLE_RATE))
            wav = wav + random.uniform(0, self.noise_level) * fit_length(clip[start:], SAMPLE_RATE)
        return wav

    def raw_features(self, wav: Tensor) -> Tensor:
        """A 16 kHz second (16000,) -> unnormalised features (L, C) at ``sample_rate``."""
        if self.lowpass:  # keep only what audio at 2 x lowpass Hz holds: down to that rate and back up
            wav = resample(resample(wav, SAMPLE_RATE, 2 * self.lowpass), 2 * self.lowpass, SAMPLE_RATE)
        wav = change_rate(wav, self.sample_rate, self.resample_mode)
        if self.mfcc is not None:
            x = rearrange(self.mfcc(wav), "c t -> t c")
            return cepstral_mean_removed(x) if self.features == "mfcc_cmn" else x
        return wav[:, None]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        """``(features (L, C), label)``; with ``views``, the clip's features and each view's, ``(1 + views, L, C)``."""
        wav = self.waveform(i)
        if self.views:
            x = torch.stack([self.raw_features(w) for w in (wav, *(view(wav) for view in self.views))])
        else:
            x = self.raw_features(wav)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.float(), self.items[i][1]


def resolve_roots(root: str | Path | list) -> list[Path]:
    """``data.root`` as a list of folders: one path, or a non-empty list of distinct paths."""
    roots = list(root) if isinstance(root, (list, tuple)) else [root]
    if not roots or not all(isinstance(r, (str, Path)) and str(r) for r in roots):
        raise UserError(f"data.root must be a folder or a list of folders, got {root!r}")
    paths = [Path(r) for r in roots]
    if len({p.resolve() for p in paths}) != len(paths):
        raise UserError(f"data.root lists a folder twice ({', '.join(map(str, paths))}): "
                        "its clips would count double; list each once")
    return paths


def merged_items(roots: list[Path], words: list[str], split: str) -> list[tuple[Path, int]]:
    """The ``split`` clips of every root, one after the other (each root's own split lists decide).

    Raises:
        UserError: a root that is not in the layout or lacks a word or the split (the line names it).
    """
    return [item for root in roots for item in speech_commands_items(root, words, split)]


class SpeechCommandsData(SplitDataModule):
    """Speech Commands classification data (real v0.02 layout or the prepared stand-in).

    Args:
        root: dataset folder, or a list of folders whose splits are merged (train on several
            synthesisers' stand-ins at once); every folder must hold every word.
        words: ``sc35``, ``sc10``, ``sc09`` or a list of words (labels follow its order).
        sample_rate: rate fed to the model (16000; 8000 for the zero-shot test).
        resample: ``proper`` (low-pass then decimate) or ``naive`` (every k-th sample).
        features: ``raw`` waveform (L, 1), ``mfcc`` (frames, n_mfcc), or ``mfcc_cmn``: MFCCs less the clip's
            own mean over its louder half of frames (per-utterance cepstral mean normalisation: a fixed
            channel or voice colouring is a constant added to every frame's cepstrum, and is removed).
        normalize: subtract the training-set mean and divide by its std (from ``stats_clips`` clips).
        mean, std: use these statistics instead (a classifier passes the ones it was trained with).
        background_noise: probability of mixing a random ``_background_noise_`` segment into a
            training clip, at a level uniform in [0, ``noise_level``].
        augment: random speaker, channel, room and noise variety for training clips, e.g.
            ``{speed: [0.85, 1.15], eq: 0.8, band_limit: 0.5, reverb: 0.3, noise: 0.5, snr: [5, 40],
            gain_db: 6}`` (see :class:`apps.speech.augment.Augmentation`; default none).
        lowpass: remove everything above this frequency (Hz) from every clip before anything else (16
            kHz audio holding only what ``2 x lowpass`` Hz audio holds; a diagnostic of
            ``ssm speech zero-shot``; default none).
        batch_size, num_workers: loader options.
    """

    val_split = "validation"

    def __init__(self, root: str | list[str] = "data/speech_commands_synth", words: str | list[str] = "sc10",
                 sample_rate: int = SAMPLE_RATE, resample: str = "proper", features: str = "raw", n_mfcc: int = 20,
                 normalize: bool = True, mean: list[float] | None = None, std: list[float] | None = None,
                 stats_clips: int = 1000, background_noise: float = 0.0, noise_level: float = 0.1,
                 augment: dict | None = None, lowpass: int | None = None, batch_size: int = 16, eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        if resample not in RESAMPLE_MODES:
            raise UserError(f"data.resample: unknown {resample!r}; choose proper or naive")
        if features not in FEATURES:
            raise UserError(f"data.features: unknown {features!r}; choose raw, mfcc or mfcc_cmn")
        if not 0 < sample_rate <= SAMPLE_RATE:
            raise UserError(f"data.sample_rate must be in (0, {SAMPLE_RATE}], got {sample_rate}")
        if lowpass is not None and not 0 < 2 * lowpass < SAMPLE_RATE:
            raise UserError(f"data.lowpass is a cut-off in Hz in (0, {SAMPLE_RATE // 2}), got {lowpass}")
        if not 0 <= background_noise <= 1:
            raise UserError(f"data.background_noise is a probability, got {background_noise}")
        self.augmentation = Augmentation.from_config(augment)
        self.save_hyperparameters()
        self.words = resolve_word_set(words)
        self.roots = resolve_roots(root)
        self.sample_rate = int(sample_rate)
        self.root = self.roots[0] if len(self.roots) == 1 else " + ".join(map(str, self.roots))
        self.items: dict[str, list[tuple[Path, int]]] = {}
        self._stats: tuple[Tensor, Tensor] | None = None
        self.views: tuple[View, ...] = ()
        if mean is not None and std is not None:
            self.set_normalization(torch.tensor(mean), torch.tensor(std))

    @property
    def num_classes(self) -> int:
        return len(self.words)

    @property
    def d_input(self) -> int:
        """Features per time step: 1 (raw) or n_mfcc."""
        return 1 if self.hparams.features == "raw" else self.hparams.n_mfcc

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"],
                  "predict": ["test"]}.get(stage or "fit", ["train", "validation", "test"])
        for split in needed:
            self.split_items(split)

    def split_items(self, split: str) -> list[tuple[Path, int]]:
        """The clips of ``split`` (train, validation or test) of every root, read once and kept."""
        if split not in self.items:
            self.items[split] = merged_items(self.roots, self.words, split)
        return self.items[split]

    def set_normalization(self, mean: Tensor, std: Tensor) -> None:
        """Use these statistics (C,) instead of computing them from the training split (kept on the CPU,
        where the loader works, whatever device a model's copy of them is on)."""
        self._stats = (mean.detach().reshape(-1).float().cpu(), std.detach().reshape(-1).float().cpu())

    def set_views(self, views: tuple[View, ...]) -> None:
        """Serve every evaluation clip with these test-time views of it (:class:`apps.speech.augment.View`), as
        ``(1 + views, L, C)``: the clip first (``ssm speech zero-shot --tta``); training and adaptation clips stay
        single."""
        self.views = tuple(views)

    def normalization(self) -> tuple[Tensor, Tensor]:
        """Training-set ``(mean (C,), std (C,))`` of the unnormalised features.

        For raw audio they are the statistics of the 16 kHz waveform whatever ``sample_rate`` is, so
        a model tested zero-shot at another rate sees its inputs scaled exactly as in training.
        """
        if self._stats is None:
            items = self.split_items("train")
            step = max(1, len(items) // self.hparams.stats_clips)
            ds = self._dataset(items[::step], normalized=False)
            if self.hparams.features == "raw":
                feats = torch.cat([ds.waveform(i) for i in range(len(ds))]).double()[:, None]  # (N L, 1)
            else:
                feats = torch.cat([ds.raw_features(ds.waveform(i)) for i in range(len(ds))]).double()  # (N T, C)
            self.set_normalization(feats.mean(0), feats.std(0).clamp_min(1e-6))
        return self._stats

    def background_clips(self) -> list[Tensor]:
        """The ``_background_noise_`` recordings of every root at 16 kHz (empty when none has the folder)."""
        folders = [root / "_background_noise_" for root in self.roots]
        clips = []
        for path in [p for folder in folders if folder.is_dir() for p in sorted(folder.glob("*.wav"))]:
            try:
                clips.append(load_audio(path, SAMPLE_RATE)[0])
            except AudioError as e:
                log.warning("skipping background noise: %s", e)
        return clips

    def _dataset(self, items: list[tuple[Path, int]], normalized: bool = True,
                 augment: bool = False, views: tuple[View, ...] = ()) -> SpeechCommandsDataset:
        h = self.hparams
        mean, std = self.normalization() if normalized and h.normalize else (None, None)
        noise = self.background_clips() if augment and h.background_noise > 0 else None
        return SpeechCommandsDataset(items, self.sample_rate, h.resample, h.features, h.n_mfcc, mean, std,
                                     noise, h.background_noise, h.noise_level,
                                     self.augmentation if augment else None, h.lowpass, views)

    def dataset(self, split: str) -> SpeechCommandsDataset:
        """The dataset of ``split`` (train, validation or test), normalised, augmented if train; ``all``: every
        clip of the three splits, never augmented (a folder scored whole, e.g. a source the model never heard)."""
        split = {"val": "validation", "testing": "test"}.get(split, split)
        names = ("train", "validation", "test") if split == "all" else (split,)
        train = split == "train"
        return self._dataset([item for name in names for item in self.split_items(name)], augment=train,
                             views=() if train else self.views)

    def adaptation_loader(self, max_clips: int, split: str = "train") -> DataLoader:
        """Up to ``max_clips`` clips of ``split``, evenly spread over it (every k-th, so every word and speaker
        counts), fed exactly as the test split is (normalised, at this module's rate, never augmented): the
        unlabelled audio that :func:`apps.common.norms.reestimate_batchnorm` adapts a model to."""
        items = self.split_items(split)
        return self._loader_of(self._dataset(items[::max(1, -(-len(items) // max_clips))][:max_clips]), False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """The loader of ``split`` (train, validation, test, or ``all``: every clip of the folder)."""
        return self._loader_of(self.dataset(split), shuffle)

    def _loader_of(self, dataset: SpeechCommandsDataset, shuffle: bool) -> DataLoader:
        h = self.hparams
        size = h.batch_size if shuffle else (h.eval_batch_size or h.batch_size)
        return DataLoader(dataset, batch_size=size, shuffle=shuffle, num_workers=h.num_workers,
                          persistent_workers=h.num_workers > 0, drop_last=False)

