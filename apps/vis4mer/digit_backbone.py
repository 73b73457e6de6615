"""A frozen frame backbone for the Moving-MNIST stand-in: torchvision ResNet-18 trained on digits.

ViS4mer's decoder reasons over a *pretrained, frozen* image model's tokens (ImageNet ViT-L on
movies); the video labels never train the backbone.  The stand-in's analogue: a ResNet-18
trained to recognise single MNIST-5k digits placed at random on the video canvas, using only the
instances the training videos draw from (:data:`apps.vis4mer.prepare.INSTANCE_RANGES`), then
saved as a plain torchvision state dict that ``ssm vis4mer extract-features --backbone resnet18
--weights FILE`` loads like any other local weights file.

    ssm vis4mer prepare digit-backbone --out data/moving_mnist/resnet18_digits.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.io import atomic_torch_save, check_writable
from apps.common.mnist import MNIST_SIDE, load_mnist5k
from apps.vis4mer.backbone import IMAGENET_MEAN, IMAGENET_STD
from apps.vis4mer.prepare import INSTANCE_RANGES
from apps.vis4mer.video import preprocess


def place_digits(images: np.ndarray, canvas: int, rng: np.random.Generator) -> torch.Tensor:
    """(N, 28, 28) uint8 digits at random positions on black canvases: (N, canvas, canvas, 3) uint8."""
    out = np.zeros((len(images), canvas, canvas), dtype=np.uint8)
    room = canvas - MNIST_SIDE
    for i, image in enumerate(images):
        y, x = rng.integers(0, room + 1, size=2)
        out[i, y:y + MNIST_SIDE, x:x + MNIST_SIDE] = image
    return torch.from_numpy(np.repeat(out[..., None], 3, axis=-1))


def train_digit_backbone(out: str | Path, canvas: int = 36, image_size: int = 32, epochs: int = 4,
                         batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> dict:
    """Train torchvision's ResNet-18 on training-range MNIST-5k digits; save its state dict to ``out``.

    Returns ``{"train_acc", "heldout_acc"}``; held-out accuracy is on the validation-range instances.
    """
    import torchvision

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = load_mnist5k()
    per_class = [torch.nonzero(labels == d).flatten() for d in range(10)]
    pick = {split: torch.cat([idx[lo:hi] for idx in per_class]) for split, (lo, hi) in INSTANCE_RANGES.items()}
    net = torchvision.models.resnet18(weights=None, num_classes=1000)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)

    def batch(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = place_digits(images[indices].numpy(), canvas, rng)
        return preprocess(frames, image_size, IMAGENET_MEAN, IMAGENET_STD), labels[indices]

    train = pick["train"]
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("digit backbone", total=steps)
        for _ in range(epochs):
            net.train()
            correct = 0
            for chunk in train[torch.randperm(len(train))].split(batch_size):
                x, y = batch(chunk)
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                correct += int((logits.argmax(-1) == y).sum())
                bar.advance(task)
    net.eval()
    with torch.no_grad():
        heldout = pick["val"]
        hits = sum(int((net(x).argmax(-1) == y).sum()) for x, y in map(batch, heldout.split(256)))
    atomic_torch_save(net.state_dict(), out)
    return {"train_acc": correct / len(train), "heldout_acc": hits / len(heldout)}


def prepare_digit_backbone(argv: list[str]) -> None:
    """``ssm vis4mer prepare digit-backbone --out FILE``."""
    p = argparse.ArgumentParser(prog="ssm vis4mer prepare digit-backbone", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/moving_mnist/resnet18_digits.pth")
    p.add_argument("--canvas", type=int, default=36, help="the videos' frame side")
    p.add_argument("--image-size", type=int, default=32, help="backbone input side (use the same at extraction)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.image_size < 8 or args.canvas < MNIST_SIDE:
        raise UserError(f"need --epochs >= 1, --image-size >= 8 and --canvas >= {MNIST_SIDE} (the digits' side) "
                        f"(got {args.epochs}, {args.image_size}, {args.canvas})")
    out = Path(args.out)
    if out.exists() and not (args.force and out.is_file()):
        raise UserError(f"--out {out} already exists; pass --force to replace it, or choose another --out")
    check_writable(out.parent, "--out")
    scores = train_digit_backbone(args.out, args.canvas, args.image_size, args.epochs, seed=args.seed)
    print(f"prepare digit-backbone: ResNet-18, last-epoch train accuracy {scores['train_acc']:.3f}, "
          f"held-out digits {scores['heldout_acc']:.3f}")
    print(f"  weights: {args.out}")
    print(f"next: ssm vis4mer extract-features --backbone resnet18 --weights {args.out} --image-size "
          f"{args.image_size} --grid 1 --videos VIDEOS --out CACHE")
