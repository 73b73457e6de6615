"""LRA data as a LightningDataModule: one ``data.task``, read from its released layout under ``data.root``.

Batches are dicts: ``x`` (B, L) token ids (long, 0 = padding) or pixels (uint8), ``lengths`` (B,)
valid lengths, ``y`` (B,) labels or (B, L) per-position labels (-100 where there is none, padding
included); retrieval adds ``x2``/``lengths2`` for the second document.  Variable-length sequences
are padded at the end to the longest of their batch.

Splits: ListOps, ListOpsSubTrees and Retrieval have their released train / val (``eval``) / test
files; Image reads LRA's split of CIFAR-10 (the last 10% of the training batches validate) and MNIST-5k
its prepared train / val / test folders.  Text (IMDB) has train and test only: the validation set is
``val_fraction`` of the training set, drawn with ``seed``.  Pathfinder
has one pool of images: it is split 80 / 10 / 10 with ``seed`` (LRA's 160k / 20k / 20k of 200k).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from apps.common.data import SplitDataModule
from apps.common.errors import UserError
from apps.lra.tasks import task_info

#: Pathfinder-style split fractions (train, val, test) of a single pool of images
POOL_SPLIT = (0.8, 0.1, 0.1)


class ListDataset(Dataset):
    """Items as a list of dicts of tensors (or a function of the index)."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar lengths, so that padding wastes little: each epoch shuffles the indices, cuts them
    into pools of ``pool`` batches, sorts every pool by length, cuts it into batches and shuffles the batches.

    Every example is used once per epoch; the order is a function of ``seed`` and the epoch (``set_epoch``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.pool, self.epoch = list(lengths), batch_size, seed, pool, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch)
        self.epoch += 1  # a new order next time, also without a trainer calling set_epoch
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        span = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]


def pad_batch(items: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Collate: pad ``x`` (and ``x2``) with 0 and a per-position ``y`` with -100 to the batch's longest; add lengths."""
    out: dict[str, Tensor] = {}
    for key, length_key in (("x", "lengths"), ("x2", "lengths2")):
        if key not in items[0]:
            continue
        seqs = [it[key] for it in items]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        batch = seqs[0].new_zeros((len(seqs), int(lengths.max())))  # (B, L_max)
        for i, s in enumerate(seqs):
            batch[i, : len(s)] = s
        out[key], out[length_key] = batch, lengths
    ys = [it["y"] for it in items]
    if ys[0].dim() == 0:
        out["y"] = torch.stack(ys)
    else:
        y = torch.full((len(ys), out["x"].shape[1]), -100, dtype=torch.long)
        for i, t in enumerate(ys):
            y[i, : len(t)] = t
        out["y"] = y
    return out


def _need(path: Path, task: str, hint: str) -> Path:
    if not path.exists():
        raise UserError(f"data.root: {path} not found for data.task {task}; {hint}")
    return path


def _split_indices(n: int, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """A seeded permutation of ``range(n)`` cut into consecutive parts of the given fractions (the last takes the rest)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for i, f in enumerate(fractions):
        end = n if i == len(fractions) - 1 else start + int(round(f * n))
        parts.append(perm[start:end])
        start = end
    return parts


class LRAData(SplitDataModule):
    """One LRA task (see :mod:`apps.lra.tasks`) from ``root``.

    Args:
        task: ``listops``, ``text``, ``retrieval``, ``image``, ``mnist``, ``pathfinder``, ``pathx``,
            ``listops_subtrees`` or ``pathfinder_segmentation``.
        root: the folder holding the release (the ``--out`` of ``ssm lra prepare``): ``listops-1000/``,
            ``pathfinder32/``, ``aclImdb/``, ``new_aan_pairs.*.tsv``, CIFAR-10 batches, MNIST-5k.
        size: Pathfinder image side (32, 64; Path-X is 128 and ignores it).
        max_len: truncate token sequences to this length (None: the task's, 2,000 / 4,096 / 4,000).
        batch_size: training batch; eval_batch_size: evaluation batch (None: ``batch_size``).
        val_fraction: share of the training set held out for validation where the release has no
            validation split (text).
        train_size: use only the first ``train_size`` training examples (None: all), for quick runs.
        seed: the seed of the held-out and Pathfinder splits (and of ``bucket``'s batch order).
        bucket: train on batches of similar lengths (:class:`BucketBatchSampler`), which saves most of the
            padding of ListOps / Text / Retrieval; off by default (the papers' batches are random).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        task: str = "listops",
        root: str = "data/lra",
        size: int = 32,
        max_len: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        train_size: int | None = None,
        seed: int = 0,
        bucket: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        info = task_info(task)
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"data.max_len must be >= 1, got {max_len}")
        if train_size is not None and train_size < 1:
            raise ValueError(f"data.train_size must be >= 1, got {train_size}")
        if size not in (32, 64, 128, 256):
            raise ValueError(f"data.size must be 32, 64, 128 or 256 (Pathfinder's sizes), got {size}")
        self.save_hyperparameters()
        self.task, self.info = task, info
        self.root = Path(root)
        self.size = 128 if task == "pathx" else size
        self.max_len = max_len if max_len is not None else info.max_len
        self.splits: dict[str, ListDataset] = {}
        self.check_root()

    def check_root(self) -> None:
        """Refuse a ``root`` without the task's release now, before any training is set up (one line)."""
        if self.task in ("listops", "listops_subtrees"):
            _need(self.root / "listops-1000" / "basic_train.tsv", self.task,
                  f"prepare it: ssm lra prepare listops --out {self.root}")
        elif self.task.startswith("path"):
            _need(self.root / f"pathfinder{self.size}", self.task,
                  f"prepare it: ssm lra prepare pathfinder --size {self.size} --out {self.root}")
        elif self.task == "mnist":
            _need(self.root, self.task, f"write MNIST-5k there: ssm s4nd prepare mnist --out {self.root}")
        else:
            _need(self.root, self.task, "point data.root at the task's released files (see data/README.md)")

    # ----------------------------------------------------------------- readers, one per family
    def _token_splits(self) -> dict[str, list[dict[str, Any]]]:
        from apps.lra.listops import encode, read_listops, subtree_targets

        folder = _need(self.root / "listops-1000", self.task, f"prepare it: ssm lra prepare listops --out {self.root}")
        out = {}
        for split in ("train", "val", "test"):
            rows = read_listops(_need(folder / f"basic_{split}.tsv", self.task,
                                      f"prepare it: ssm lra prepare listops --out {self.root}"))
            if split == "train" and self.hparams.train_size:
                rows = rows[: self.hparams.train_size]
            items = []
            for source, label in rows:
                if self.task == "listops_subtrees":
                    ids, labels = subtree_targets(source)
                    items.append({"x": torch.tensor(ids[: self.max_len], dtype=torch.long),
                                  "y": torch.tensor(labels[: self.max_len], dtype=torch.long)})
                else:
                    items.append({"x": torch.tensor(encode(source)[: self.max_len], dtype=torch.long),
                                  "y": torch.tensor(int(label))})
            out[split] = items
        return out

    def _bytes(self, text: bytes) -> Tensor:
        from apps.lra.text import byte_ids

        return torch.as_tensor(byte_ids(text, self.max_len), dtype=torch.long)

    def _text_splits(self) -> dict[str, list[dict[str, Any]]]:
        from apps.lra.text import read_imdb

        _need(self.root, self.task, "point data.root at the folder holding aclImdb/")
        train = [{"x": self._bytes(t), "y": torch.tensor(int(y))} for t, y in read_imdb(self.root, "train")]
        test = [{"x": self._bytes(t), "y": torch.tensor(int(y))} for t, y in read_imdb(self.root, "test")]
        return {**self._hold_out(train), "test": test}

    def _retrieval_splits(self) -> dict[str, list[dict[str, Any]]]:
        from apps.lra.text import read_aan

        _need(self.root, self.task, "point data.root at the folder holding new_aan_pairs.{train,eval,test}.tsv")
        out = {}
        for split, release in (("train", "train"), ("val", "eval"), ("test", "test")):
            out[split] = [{"x": self._bytes(a), "x2": self._bytes(b), "y": torch.tensor(int(y))}
                          for a, b, y in read_aan(self.root, release)]
        return out

    def _array_splits(self, reader: Any) -> dict[str, list[dict[str, Any]]]:
        def items(split: str) -> list[dict[str, Any]]:
            images, labels = reader(self.root, split)
            flat = torch.as_tensor(images).reshape(len(images), -1)  # (N, H * W) uint8
            labels = torch.as_tensor(labels, dtype=torch.long)
            return [{"x": flat[i], "y": labels[i]} for i in range(len(flat))]

        _need(self.root, self.task, "point data.root at the dataset's folder"
              + (" (ssm s4nd prepare mnist --out DIR writes MNIST-5k)" if self.task == "mnist" else ""))
        out = {split: items(split) for split in ("train", "val", "test")}
        if self.hparams.train_size:
            out["train"] = out["train"][: self.hparams.train_size]
        return out

    def _pathfinder_splits(self) -> dict[str, list[dict[str, Any]]]:
        from apps.lra.pathfinder import load_png, read_pathfinder, read_segmentation, segmentation_target

        hint = f"prepare it: ssm lra prepare pathfinder --size {self.size} --out {self.root}"
        _need(self.root / f"pathfinder{self.size}", self.task, hint)
        if self.task == "pathfinder_segmentation":
            pairs = read_segmentation(self.root, self.size)
            items = [{"x": torch.from_numpy(load_png(img)).reshape(-1),
                      "y": torch.from_numpy(segmentation_target(mask)).reshape(-1)} for img, mask in pairs]
        else:
            items = [{"x": torch.from_numpy(load_png(img)).reshape(-1), "y": torch.tensor(int(label))}
                     for img, label in read_pathfinder(self.root, self.size)]
        if len(items) < 3:
            raise UserError(f"data.root: {self.root / f'pathfinder{self.size}'} holds {len(items)} images; "
                            f"at least 3 are needed for train / val / test ({hint} --n 1000)")
        parts = _split_indices(len(items), POOL_SPLIT, self.hparams.seed)
        out = {name: [items[int(i)] for i in idx] for name, idx in zip(("train", "val", "test"), parts, strict=True)}
        if self.hparams.train_size:
            out["train"] = out["train"][: self.hparams.train_size]
        return out

    def _hold_out(self, train: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        if len(train) < 2:
            raise UserError(f"data.root: {self.root} holds {len(train)} training examples for {self.task}; "
                            "at least 2 are needed (one is held out for validation)")
        n_val = max(1, int(round(self.hparams.val_fraction * len(train))))
        train_idx, val_idx = _split_indices(len(train), (1 - n_val / len(train), n_val / len(train)),
                                            self.hparams.seed)
        kept = [train[int(i)] for i in train_idx]
        if self.hparams.train_size:
            kept = kept[: self.hparams.train_size]
        return {"train": kept, "val": [train[int(i)] for i in val_idx]}

    # ----------------------------------------------------------------- Lightning
    def read_splits(self) -> dict[str, list[dict[str, Any]]]:
        """Every split of the task as lists of items (the release read, encoded and split)."""
        if self.task in ("listops", "listops_subtrees"):
            return self._token_splits()
        if self.task == "text":
            return self._text_splits()
        if self.task == "retrieval":
            return self._retrieval_splits()
        if self.task == "image":
            from apps.lra.image import read_cifar_grey

            return self._array_splits(read_cifar_grey)
        if self.task == "mnist":
            from apps.lra.image import read_mnist_seq

            return self._array_splits(read_mnist_seq)
        return self._pathfinder_splits()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {name: ListDataset(items) for name, items in self.read_splits().items()}
            for name, ds in self.splits.items():
                if len(ds) == 0:
                    raise UserError(f"data.root: the {name} split of {self.task} under {self.root} is empty")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.splits:
            self.setup()
        h = self.hparams
        dataset = self.splits[split]
        workers = {"num_workers": h.num_workers, "persistent_workers": h.num_workers > 0}
        if split == "train" and h.bucket:
            lengths = [len(item["x"]) + len(item.get("x2", ())) for item in dataset.items]
            sampler = BucketBatchSampler(lengths, h.batch_size, seed=h.seed)
            return DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_batch, **workers)
        batch = h.batch_size if split == "train" else (h.eval_batch_size or h.batch_size)
        return DataLoader(dataset, batch_size=batch, shuffle=shuffle, collate_fn=pad_batch, **workers)
