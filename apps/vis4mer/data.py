"""Long-video datasets for ViS4mer: labels from each dataset's own files, features from the cache.

Label layouts read (``data.root``):

* ``lvu``: LVU 1.0 (Wu & Krähenbühl 2021), ``ROOT/lvu_1.0/<task>/{train,val,test}.csv``, a header
  line then space-separated rows ``<label> <label name> <youtube_id> ...``.  Nine tasks: seven
  classification (relationship 4, way_speaking 5, scene 6, director 10, genre 4, writer 10,
  year 9 classes) and two regression (like_ratio, view_count).  The Moving-MNIST stand-in
  (:mod:`apps.vis4mer.prepare`) writes the same layout with tasks first_digit (10 classes) and
  seven_count (regression).
* ``breakfast``: Breakfast Actions (Kuehne et al. 2014) in the action-segmentation layout,
  ``ROOT/splits/{train,test}.split<k>.bundle`` listing ``P03_cam01_P03_cereals.txt``; the video
  id is the name without ``.txt``, the activity (10 classes) its last ``_`` field.  No val list:
  the test list stands in.
* ``coin``: COIN (Tang et al. 2019), ``ROOT/COIN.json`` with ``database: {youtube_id: {"recipe_type":
  0..179, "subset": "training"|"testing"}}``: 180 task classes.  The test subset is also val.

Features come from ``data.features`` (``ssm vis4mer extract-features``), keyed by video id.
Each video is cut into spans of ``l_secs`` seconds; every span is one item ``(tokens (L, D) float32,
target, video index)``, L = span frames x tokens per frame.  Videos listed in the cache's
``failed.csv`` are skipped with a note.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from apps.common.data import SplitDataModule
from apps.common.errors import UserError
from apps.vis4mer.features import load_features, load_manifest, read_failed
from apps.vis4mer.video import span_indices

DATASETS = ("lvu", "breakfast", "coin")
LVU_TASKS = {"relationship": 4, "way_speaking": 5, "scene": 6, "director": 10, "genre": 4, "writer": 10,
             "year": 9, "like_ratio": 0, "view_count": 0, "first_digit": 10, "seven_count": 0}
REGRESSION_TASKS = ("like_ratio", "view_count", "seven_count")
BREAKFAST_ACTIVITIES = ("cereals", "coffee", "friedegg", "juice", "milk", "pancake", "salat", "sandwich",
                        "scrambledegg", "tea")
COIN_CLASSES = 180
SPLITS = ("train", "val", "test")


def task_outputs(dataset: str, task: str) -> tuple[bool, int]:
    """``(is_regression, outputs)`` of a task: outputs is the class count, or 1 for regression."""
    if dataset == "breakfast":
        return False, len(BREAKFAST_ACTIVITIES)
    if dataset == "coin":
        return False, COIN_CLASSES
    if task in REGRESSION_TASKS:
        return True, 1
    if task not in LVU_TASKS:
        raise UserError(f"data.task: unknown LVU task {task!r}; choose one of {', '.join(LVU_TASKS)}")
    return False, LVU_TASKS[task]


def read_lvu(root: str | Path, task: str, split: str) -> list[tuple[str, float]]:
    """``(youtube_id, label)`` rows of ``ROOT/lvu_1.0/<task>/<split>.csv``."""
    path = Path(root) / "lvu_1.0" / task / f"{split}.csv"
    if not path.is_file():
        raise UserError(f"LVU split file not found: {path} (expected ROOT/lvu_1.0/<task>/{{train,val,test}}.csv)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines()[1:], 2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3:
            raise UserError(f"{path}:{n}: expected '<label> <label name> <youtube_id> ...', got {line!r}")
        try:
            rows.append((fields[2], float(fields[0])))
        except ValueError as e:
            raise UserError(f"{path}:{n}: the label {fields[0]!r} is not a number") from e
    return rows


def read_breakfast(root: str | Path, split: str, fold: int = 1) -> list[tuple[str, float]]:
    """``(video_id, activity index)`` from ``ROOT/splits/<split>.split<fold>.bundle`` (val reads test)."""
    name = "train" if split == "train" else "test"
    path = Path(root) / "splits" / f"{name}.split{fold}.bundle"
    if not path.is_file():
        raise UserError(f"Breakfast split file not found: {path} (expected ROOT/splits/{name}.split{fold}.bundle)")
    rows = []
    for line in path.read_text().split():
        video = line.removesuffix(".txt")
        activity = video.rsplit("_", 1)[-1]
        if activity not in BREAKFAST_ACTIVITIES:
            raise UserError(f"{path}: {line!r} does not end in one of the 10 activities ({', '.join(BREAKFAST_ACTIVITIES)})")
        rows.append((video, float(BREAKFAST_ACTIVITIES.index(activity))))
    return rows


def read_coin(root: str | Path, split: str) -> list[tuple[str, float]]:
    """``(youtube_id, recipe_type)`` of the COIN ``training`` (train) or ``testing`` (val, test) subset."""
    path = Path(root) / "COIN.json"
    if not path.is_file():
        raise UserError(f"COIN label file not found: {path}")
    database = json.loads(path.read_text()).get("database", {})
    subset = "training" if split == "train" else "testing"
    return [(vid, float(entry["recipe_type"])) for vid, entry in sorted(database.items())
            if entry.get("subset") == subset]


class SpanFeatures(Dataset):
    """Spans of cached videos: item ``(tokens (span_frames * P, D) float32, target, video index)``.

    Args:
        cache: feature cache folder.  videos: ``(video_id, target)``.  span_frames: frames per span.
    """

    def __init__(self, cache: str | Path, videos: list[tuple[str, float]], span_frames: int) -> None:
        self.cache, self.videos = Path(cache), videos
        manifest = load_manifest(cache)["videos"]
        self.items: list[tuple[int, Tensor]] = []
        for v, (video, _) in enumerate(videos):
            frames = manifest[video]["shape"][0]
            self.items += [(v, positions) for positions in map(torch.from_numpy, span_indices(frames, span_frames))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        v, positions = self.items[i]
        video, target = self.videos[v]
        tokens = load_features(self.cache, video)[positions].float()  # (T, P, D)
        return tokens.flatten(0, 1), torch.tensor(target, dtype=torch.float32), v


class VideoData(SplitDataModule):
    """LVU / Breakfast / COIN (or the Moving-MNIST stand-in) spans of cached backbone features.

    Args:
        dataset: ``lvu``, ``breakfast`` or ``coin``.
        root: the dataset's label files.  features: the feature cache (default ``ROOT/features``).
        task: LVU task (ignored for breakfast and coin).
        l_secs: span length in seconds (60 in the paper); frames per span = l_secs x cache fps.
        fold: Breakfast split number.
    """

    def __init__(self, dataset: str = "lvu", root: str = "data/moving_mnist", task: str = "first_digit",
                 features: str | None = None, l_secs: float = 60.0, batch_size: int = 16, num_workers: int = 0,
                 fold: int = 1) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise UserError(f"data.dataset: unknown {dataset!r}; choose one of {', '.join(DATASETS)}")
        self.save_hyperparameters()
        self.regression, self.num_outputs = task_outputs(dataset, task)
        self.splits: dict[str, SpanFeatures] = {}
        self.target_mean, self.target_std = 0.0, 1.0

    @property
    def cache(self) -> Path:
        return Path(self.hparams.features or Path(self.hparams.root) / "features")

    def labels(self, split: str) -> list[tuple[str, float]]:
        h = self.hparams
        if h.dataset == "lvu":
            return read_lvu(h.root, h.task, split)
        if h.dataset == "breakfast":
            return read_breakfast(h.root, split, h.fold)
        return read_coin(h.root, split)

    def feature_info(self) -> tuple[int, int, float]:
        """``(tokens per frame, channels, frames per second)`` of the cache."""
        manifest = load_manifest(self.cache)
        backbone, fps = manifest["backbone"], manifest["sampling"].get("fps")
        if fps is None:
            raise UserError(f"the cache {self.cache} sampled a fixed number of frames; spans need --fps sampling")
        return backbone["tokens"], backbone["dim"], float(fps)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        _, _, fps = self.feature_info()
        span_frames = max(1, math.ceil(self.hparams.l_secs * fps - 1e-9))
        cached, failed = load_manifest(self.cache)["videos"], read_failed(self.cache)
        for split in SPLITS:
            rows = self.labels(split)
            missing = [v for v, _ in rows if v not in cached]
            unknown = [v for v in missing if v not in failed]
            if unknown:
                raise UserError(f"{len(unknown)} {split} videos (e.g. {unknown[0]}) are not in the feature cache "
                                f"{self.cache}: run `ssm vis4mer extract-features` on them")
            if missing:
                print(f"note: {len(missing)} {split} videos skipped (unreadable, see {self.cache / 'failed.csv'})")
            rows = [(v, y) for v, y in rows if v in cached]
            if not rows:
                raise UserError(f"no usable {split} videos for {self.hparams.dataset}/{self.hparams.task}")
            self.splits[split] = SpanFeatures(self.cache, rows, span_frames)
        if self.regression:
            targets = torch.tensor([y for _, y in self.splits["train"].videos])
            self.target_mean = float(targets.mean())
            self.target_std = float(targets.std()) if len(targets) > 1 and targets.std() > 0 else 1.0

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)


