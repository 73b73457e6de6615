"""Delayed recall: the target at step t is the input token at step t - delay.

A causal sequence model must carry each token ``delay`` steps; an SSM does it with one
shifted kernel.  Samples are generated from a seed, or read from a folder written by
``ssm smoke prepare`` (``train.pt``, ``val.pt``, ``test.pt``, each ``{"x", "y"}``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.io import atomic_torch_save
from apps.common.prepared import MARKER, already_prepared, building, parse_sizes

SPLITS = ("train", "val", "test")
IGNORE = -100


def delayed_recall(n: int, length: int, vocab: int, delay: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of shape (n, length) long; ``y[:, t] = x[:, t - delay]`` and ``IGNORE`` for t < delay."""
    if not 0 < delay < length:
        raise ValueError(f"data.delay must be in [1, length), got delay={delay}, length={length}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = torch.full_like(x, IGNORE)
    y[:, delay:] = x[:, :-delay]
    return x, y


def read_split(path: Path, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a split file written by ``ssm smoke prepare``, read without unpickling code, checked:
    ``x`` and ``y`` long tensors of one shape (n, length), tokens in ``[0, vocab)``, targets tokens or ``IGNORE``.

    Raises:
        UserError: the file is unreadable or holds anything else; the message names it and the fix.
    """
    rebuild = f"rebuild the folder with `ssm smoke prepare --out {path.parent}`"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises several types for a text, truncated or foreign file
        raise UserError(f"cannot read {path}: not a split written by `ssm smoke prepare` "
                        f"({type(e).__name__}); {rebuild}") from None
    x, y = (blob.get("x"), blob.get("y")) if isinstance(blob, dict) else (None, None)
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype == torch.long
            and x.ndim == 2 and x.shape == y.shape and x.numel() > 0):
        raise UserError(f"{path} does not hold the {{'x', 'y'}} token tensors of one shape (n, length) that "
                        f"`ssm smoke prepare` writes; {rebuild}")
    tokens = torch.cat([x.flatten(), y[y != IGNORE]])
    low, top = int(tokens.min()), int(tokens.max())
    if low < 0 or top >= vocab:
        raise UserError(f"{path} holds token values {low}..{top}, outside [0, data.vocab = {vocab}); set data.vocab to the "
                        f"--vocab the folder was prepared with (its {MARKER} says), or rebuild it")
    return x, y


class DelayedRecallData(pl.LightningDataModule):
    """Delayed-recall sequences.

    Args:
        vocab: number of token values.
        length: sequence length.
        delay: how many steps back the target looks.
        train_size, val_size, test_size: examples per split (generated mode).
        batch_size: batch size.
        seed: generation seed (splits use seed, seed + 1, seed + 2).
        data_dir: read the splits written by ``ssm smoke prepare`` from here instead of generating.
    """

    def __init__(
        self,
        vocab: int = 8,
        length: int = 64,
        delay: int = 16,
        train_size: int = 2048,
        val_size: int = 256,
        test_size: int = 256,
        batch_size: int = 32,
        seed: int = 0,
        data_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if data_dir is not None:
            missing = [s for s in SPLITS if not (Path(data_dir) / f"{s}.pt").is_file()]
            if not Path(data_dir).is_dir():
                raise UserError(f"data.data_dir not found: {data_dir} (build it with `ssm smoke prepare --out {data_dir}`)")
            if missing:
                raise UserError(f"data.data_dir {data_dir} lacks {', '.join(missing)}.pt (rebuild it with `ssm smoke prepare --out {data_dir}`)")
        else:
            delayed_recall(1, length, vocab, delay, seed)  # validates the options now, not in a worker
        self.splits: dict[str, TensorDataset] = {}

    def _split(self, index: int) -> TensorDataset:
        h = self.hparams
        name = SPLITS[index]
        if h.data_dir is not None:
            return TensorDataset(*read_split(Path(h.data_dir) / f"{name}.pt", h.vocab))
        size = (h.train_size, h.val_size, h.test_size)[index]
        return TensorDataset(*delayed_recall(size, h.length, h.vocab, h.delay, h.seed + index))

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:  # loaded once (the CLI loads before the run writes anything)
            self.splits = {name: self._split(i) for i, name in enumerate(SPLITS)}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def prepare(argv: list[str]) -> None:
    """``ssm smoke prepare --out DIR``: write fixed train/val/test splits."""
    p = argparse.ArgumentParser(prog="ssm smoke prepare", description="Write fixed delayed-recall splits.")
    p.add_argument("--out", default="data/smoke", help="output folder (default data/smoke)")
    p.add_argument("--vocab", type=int, default=8)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--delay", type=int, default=16)
    p.add_argument("--sizes", default="2048,256,256", help="train,val,test sizes")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    sizes = parse_sizes(a.sizes)
    if a.vocab < 2 or a.length < 2 or not 0 < a.delay < a.length:
        raise UserError(f"need --vocab >= 2 and 0 < --delay < --length "
                        f"(got {a.vocab}, {a.length}, {a.delay})")
    out = Path(a.out)
    settings = {"vocab": a.vocab, "length": a.length, "delay": a.delay, "sizes": sizes, "seed": a.seed}
    if already_prepared(out, "ssm smoke prepare", settings, a.force):
        return
    with building(out, "ssm smoke prepare", settings) as tmp:
        for i, (name, n) in enumerate(zip(SPLITS, sizes)):
            x, y = delayed_recall(n, a.length, a.vocab, a.delay, a.seed + i)
            atomic_torch_save({"x": x, "y": y}, tmp / f"{name}.pt")
    for name, n in zip(SPLITS, sizes):
        print(f"wrote {out / f'{name}.pt'} ({n} sequences of length {a.length})")
