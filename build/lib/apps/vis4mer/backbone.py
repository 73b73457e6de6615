"""Frozen image backbones that turn each video frame into tokens for the ViS4mer decoder.

ViS4mer (Islam & Bertasius 2022) embeds every frame with a frozen ViT-L/16 and keeps all
197 tokens (class token + 14 x 14 patches).  Choices here:

* ``vit_b_16`` / ``vit_l_16``: torchvision's ViT; the encoder's output tokens (197 x 768 / 1024).
* ``resnet18`` / ``resnet50``: torchvision's ResNet; the last feature map average-pooled to a
  ``grid x grid`` grid of tokens (grid^2 x 512 / 2048).
* ``linear``: plain linear patch tokens, the normalised pixels of each ``patch x patch`` patch
  (no weights at all; for stand-ins and when no pretrained weights are at hand).

Weights are read only from a local file (``weights=PATH``), never downloaded.  Without weights
a torchvision backbone refuses to run unless ``random_weights=True`` (tests, benchmarks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from apps.common.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("linear", "vit_b_16", "vit_l_16", "resnet18", "resnet50")


@dataclass
class BackboneSpec:
    """What a backbone expects and produces (written to the feature cache's manifest)."""

    name: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tokens: int
    dim: int
    options: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class LinearPatches(nn.Module):
    """(B, 3, S, S) -> (B, (S/p)^2, 3 p^2): each patch's pixels as one token (raster order)."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=self.patch, p2=self.patch)


class ViTTokens(nn.Module):
    """torchvision ViT without its head: (B, 3, 224, 224) -> (B, 1 + 196, D), all encoder tokens."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.vit._process_input(x)  # (B, 196, D)
        cls = self.vit.class_token.expand(x.shape[0], -1, -1)
        return self.vit.encoder(torch.cat([cls, tokens], dim=1))


class ResNetTokens(nn.Module):
    """torchvision ResNet trunk, last map pooled to ``grid x grid``: (B, 3, S, S) -> (B, grid^2, C)."""

    def __init__(self, resnet: nn.Module, grid: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])
        self.pool = nn.AdaptiveAvgPool2d(grid)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.pool(self.trunk(x)), "b c h w -> b (h w) c")


def _load_weights(model: nn.Module, weights: str | Path) -> None:
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"backbone weights not found: {path} (give a local .pth file; nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read backbone weights {path}: {type(e).__name__}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"backbone weights {path} do not fit {type(model).__name__}: "
                        f"{str(e).splitlines()[1].strip()[:100] if len(str(e).splitlines()) > 1 else e}") from e


def make_backbone(name: str = "linear", weights: str | Path | None = None, image_size: int | None = None,
                  patch: int = 8, grid: int = 7, random_weights: bool = False) -> tuple[nn.Module, BackboneSpec]:
    """A frozen backbone (eval mode, no gradients) and its :class:`BackboneSpec`.

    Args:
        name: one of :data:`BACKBONES`.
        weights: local state-dict file of the torchvision model (required unless ``random_weights``).
        image_size: input side (``linear``: default 32, a multiple of ``patch``; ResNet: default 224;
            ViT: 224 only).
        patch: ``linear`` patch side.  grid: ResNet token grid side.
    """
    import torchvision

    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if name == "linear":
        size = image_size or 32
        if size % patch:
            raise UserError(f"--image-size {size} must be a multiple of --patch {patch} for linear patch tokens")
        spec = BackboneSpec(name, size, (0.5,) * 3, (0.5,) * 3, (size // patch) ** 2, 3 * patch * patch,
                            {"patch": patch})
        module: nn.Module = LinearPatches(patch)
    else:
        if weights is None and not random_weights:
            raise UserError(f"backbone {name} needs --weights PATH (a local torchvision state dict); "
                            "nothing is downloaded. Use --backbone linear when no weights are at hand")
        net = getattr(torchvision.models, name)(weights=None)
        if weights is not None:
            _load_weights(net, weights)
        if name.startswith("vit"):
            if image_size not in (None, 224):
                raise UserError(f"{name} takes 224 x 224 frames, not --image-size {image_size}")
            module = ViTTokens(net)
            spec = BackboneSpec(name, 224, IMAGENET_MEAN, IMAGENET_STD, 197, net.hidden_dim)
        else:
            module = ResNetTokens(net, grid)
            spec = BackboneSpec(name, image_size or 224, IMAGENET_MEAN, IMAGENET_STD, grid * grid,
                                net.fc.in_features, {"grid": grid})
        spec.options["weights"] = str(weights) if weights is not None else "random"
    module.eval().requires_grad_(False)
    return module, spec
