"""Resolution-agnostic backbones for images (B, H, W, C) and videos (B, T, H, W, C), channels last.

S4ND (Nguyen, Goel, Gu et al. 2022, "S4ND: Modeling Images and Videos as Multidimensional
Signals Using State Spaces") treats an image as samples of a continuous signal: its kernels are
sampled continuous kernels, so a network trained at one resolution runs at another once every
S4ND layer gets ``rate = old grid spacing / new grid spacing`` per axis (Sec. 3.3).  Here the
network stores its training resolution and derives the rate of every layer from the input it is
given, so no user ever computes a rate:

* :class:`IsotropicNet` -- stem, ``n_layers`` residual (norm, S4ND, feed-forward) blocks at one
  width, pooled head (the paper's S4ND-ISO).
* :class:`ConvNeXtNet` -- ConvNeXt (Liu et al. 2022) stages whose depthwise convolutions are
  S4ND layers (the paper's S4ND-ConvNeXt), joined by antialiased half-size resampling.
The mixer is one layer spec, as in every app: ``layer: {name: s4nd, d_state: 32, bandlimit: 0.5}``
(any registry layer that takes ``dim``), or ``layer: {name: conv2d, d_state: 16}``, which swaps every
S4ND layer for a depthwise convolution of matched parameter count (:func:`matched_conv_kernel`; or
``kernel_size``): the Conv2D baseline.  At a new resolution it simply runs
  its kernels on the larger grid, which is why it fails there.

What makes zero-shot meaningful: every part must see the same piece of the continuous image at
every resolution.  A pointwise (``pixel``) stem does; a ``patch`` stem does because its patch
covers a fixed fraction of the image -- ``p * resolution / train_resolution`` pixels, with the
weights resampled to that size (as FlexiViT does) -- so its token grid keeps the training size;
a fixed-size patch would see less of the digit at a finer grid, which no rate can undo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from apps.common.layers import LayerError, LayerSpec, layer_spec
from ssmcore.blocks import FeedForward, ResidualBlock
from ssmcore.layers.base import make_activation
from ssmcore.layers.s4nd import S4ND
from ssmcore.registry import make_layer

#: the mixers: registry layers that take ``dim`` (S4ND, CCNN's continuous kernels) and the Conv2D baseline
MIXERS = ("s4nd", "ccnn", "conv2d")
#: the options of the Conv2D baseline's spec: the S4ND state size it matches, or its kernel size
CONV_OPTIONS = {"d_state": 32, "kernel_size": None}
#: the default mixer: S4ND as in the paper's MNIST / CIFAR settings here
S4ND_LAYER: LayerSpec = {"name": "s4nd", "d_state": 32, "bandlimit": 0.5, "dt_min": 0.01, "dt_max": 0.1}
STEMS = ("pixel", "patch")
Rate = float | Sequence[float]


def as_sizes(resolution: int | Sequence[int], dim: int) -> tuple[int, ...]:
    """One size per axis: an int is repeated ``dim`` times."""
    sizes = (int(resolution),) * dim if isinstance(resolution, int) else tuple(int(r) for r in resolution)
    if len(sizes) != dim or any(s < 1 for s in sizes):
        raise ValueError(f"a resolution needs {dim} positive sizes (one per axis), got {resolution}")
    return sizes


def matched_conv_kernel(d_state: int, dim: int = 2) -> int:
    """The odd kernel size whose depthwise convolution (``k**dim`` weights + bias per feature) has
    the parameter count of one feature of a bidirectional S4ND layer (SSM + D), so that the
    Conv2D baseline and S4ND differ in how they mix space, not in size."""
    layer = S4ND(d_model=1, d_state=d_state, dim=dim, postact="none")
    per_feature = sum(p.numel() for name, p in layer.named_parameters() if not name.startswith("output"))
    best = max(1, round((per_feature - 1) ** (1 / dim)))
    candidates = [k for k in (best - 1, best, best + 1) if k >= 1 and k % 2 == 1]
    return min(candidates, key=lambda k: abs(k**dim + 1 - per_feature))


class ConvMixer(nn.Module):
    """Depthwise ``Conv{dim}d`` (same padding) + activation + dropout + output projection.

    The Conv2D baseline's stand-in for an S4ND layer, with the same contract:
    ``x`` (B, *spatial, H) -> ``(y (B, *spatial, H), None)``; ``rate`` is accepted and ignored.
    """

    def __init__(self, d_model: int, kernel_size: int, dim: int = 2, dropout: float = 0.0,
                 activation: str | None = "gelu", postact: str = "glu") -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"model.conv_kernel must be odd and positive, got {kernel_size}")
        self.dim = dim
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dim - 1]
        self.conv = conv(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if postact == "glu":
            self.output: nn.Module = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))
        else:
            self.output = nn.Identity()

    def forward(self, x: Tensor, state: None = None, rate: Rate = 1.0) -> tuple[Tensor, None]:
        y = self.conv(rearrange(x, "b ... h -> b h ..."))  # (B, H, *S)
        y = rearrange(y, "b h ... -> b ... h")
        return self.output(self.dropout(self.activation(y))), None


def mixer_spec(spec: LayerSpec | None, key: str = "model.layer") -> LayerSpec:
    """The checked mixer spec: ``conv2d`` with :data:`CONV_OPTIONS`, or a registry layer that takes ``dim``.

    An ``s4nd`` spec takes the options it leaves out from :data:`S4ND_LAYER` (this app's S4ND settings).

    Raises:
        LayerError: an unknown mixer or option, or a bad value, naming ``key``.
    """
    spec = dict(S4ND_LAYER if spec is None else spec)
    if spec.get("name") == "conv2d":
        unknown = sorted(set(spec) - {"name", *CONV_OPTIONS})
        if unknown:
            raise LayerError(f"{key}.{unknown[0]}: conv2d has no option {unknown[0]!r}; its options are "
                             f"{', '.join(CONV_OPTIONS)}")
        out = {"name": "conv2d", **CONV_OPTIONS, **spec}
        for option in CONV_OPTIONS:
            if out[option] is not None and (not isinstance(out[option], int) or isinstance(out[option], bool)):
                raise LayerError(f"{key}.{option}: expected an integer, got {out[option]!r}")
        return out
    if spec.get("name") not in MIXERS:
        raise LayerError(f"{key}.name: unknown mixer {spec.get('name')!r}; choose one of {', '.join(MIXERS)}")
    if spec["name"] == S4ND_LAYER["name"]:
        spec = {**S4ND_LAYER, **spec}
    return layer_spec(spec, key, sequence=False)  # make_mixer sets dim (2 for images, 3 for videos)


def make_mixer(spec: LayerSpec, d_model: int, dim: int, dropout: float, depthwise_only: bool,
               grid: Sequence[int] | None = None) -> nn.Module:
    """The mixer of a checked ``spec`` (:func:`mixer_spec`): a bidirectional S4ND or CCNN layer, or the
    Conv2D stand-in; ``depthwise_only`` drops activation and projection (ConvNeXt) unless the spec sets them.
    ``grid``, the training grid of the mixer's stage, is CCNN's kernel extent (``l_max``) unless the spec
    sets one: rate 1 then means that grid whatever resolution the first batch has."""
    activation, postact = (None, "none") if depthwise_only else ("gelu", "glu")
    if spec["name"] == "ccnn" and grid is not None and spec.get("l_max") is None:
        spec = {**spec, "l_max": list(grid)}
    if spec["name"] == "conv2d":
        kernel = spec["kernel_size"] or matched_conv_kernel(spec["d_state"], dim)
        return ConvMixer(d_model=d_model, kernel_size=kernel, dim=dim, dropout=dropout, activation=activation,
                         postact=postact)
    return make_layer(spec, d_model=d_model, dim=dim, bidirectional=True, dropout=dropout, activation=activation,
                      postact=postact)


class Stem(nn.Module):
    """``pixel``: ``Linear(C_in, d)`` at every pixel.  ``patch``: non-overlapping patches of
    ``patch_size`` pixels at the training resolution and of ``patch_size * res / train_res`` at
    resolution ``res`` (weights resampled antialiased-bilinear, scaled by the area ratio), 2-D only.

    ``x`` (B, *spatial, C_in) -> (B, *grid, d); :meth:`grid` gives the grid of an input size.
    """

    def __init__(self, kind: str, in_channels: int, d_model: int, dim: int, train_size: tuple[int, ...],
                 patch_size: int = 2) -> None:
        super().__init__()
        if kind not in STEMS:
            raise ValueError(f"model.stem: unknown {kind!r}; choose one of {', '.join(STEMS)}")
        self.kind, self.dim, self.train_size, self.patch_size = kind, dim, train_size, patch_size
        if kind == "pixel":
            self.proj: nn.Module = nn.Linear(in_channels, d_model)
            return
        if dim != 2:
            raise ValueError("model.stem: the patch stem is 2-D only; use stem: pixel for video")
        if patch_size < 1 or any(s % patch_size for s in train_size):
            raise ValueError(f"model.patch_size {patch_size} must divide the training resolution {train_size}")
        self.proj = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size)

    def patch_sizes(self, sizes: Sequence[int]) -> tuple[int, ...]:
        """Patch size per axis at input ``sizes`` (the same fraction of the image as in training)."""
        patches = []
        for size, train in zip(sizes, self.train_size):
            p = self.patch_size * size / train
            if abs(p - round(p)) > 1e-9 or round(p) < 1:
                raise ValueError(
                    f"the patch stem (patch {self.patch_size} at {train}) needs resolutions where "
                    f"{self.patch_size} * res / {train} is a whole number; got {size}"
                )
            patches.append(round(p))
        return tuple(patches)

    def grid(self, sizes: Sequence[int]) -> tuple[int, ...]:
        """The token grid for an input of ``sizes`` pixels per axis."""
        if self.kind == "pixel":
            return tuple(sizes)
        return tuple(s // p for s, p in zip(sizes, self.patch_sizes(sizes)))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "pixel":
            return self.proj(x)
        patch = self.patch_sizes(x.shape[1:-1])
        weight = self.proj.weight  # (d, C, p, p)
        if patch != (self.patch_size, self.patch_size):
            area = (self.patch_size**2) / (patch[0] * patch[1])
            weight = F.interpolate(weight, size=patch, mode="bilinear", antialias=True, align_corners=False) * area
        y = F.conv2d(rearrange(x, "b h w c -> b c h w"), weight, self.proj.bias, stride=patch)
        return rearrange(y, "b d h w -> b h w d")


def _rates(train_grid: Sequence[int], grid: Sequence[int]) -> tuple[float, ...]:
    """Per-axis rate of a layer trained on ``train_grid`` that runs on ``grid`` (same extent)."""
    return tuple(t / g for t, g in zip(train_grid, grid))


class _Backbone(nn.Module):
    """Shared input checks and rate derivation."""

    def _check(self, x: Tensor) -> None:
        if x.dim() != self.dim + 2 or x.shape[-1] != self.in_channels:
            axes = "height, width" if self.dim == 2 else "time, height, width"
            raise ValueError(
                f"{type(self).__name__} expects (batch, {axes}, {self.in_channels}) channels-last input "
                f"(model.in_channels={self.in_channels}), got {tuple(x.shape)}"
            )


class IsotropicNet(_Backbone):
    """S4ND-ISO: stem, ``n_layers`` x (residual norm-S4ND, residual norm-FF), norm, mean pool, linear head.

    Args:
        in_channels, num_classes: image channels and classes.
        train_resolution: the resolution (int, or one size per axis) that rate 1 refers to.
        dim: 2 for images (B, H, W, C), 3 for videos (B, T, H, W, C).
        d_model, n_layers, ff_expand, dropout: width, depth, feed-forward expansion, dropout.
        layer: the mixer spec (see :func:`mixer_spec`): ``{name: s4nd, d_state, bandlimit, dt_min, dt_max,
            align_rate, ...}`` (``bandlimit`` None turns it off; ``align_rate`` keeps the half-step offset of the
            training grid at other rates, :meth:`ssmcore.layers.s4nd.S4ND.discrete`), or ``{name: conv2d, d_state}``
            (the baseline; ``kernel_size`` None matches S4ND's parameters).
        stem, patch_size: see :class:`Stem`.
    """

    def __init__(self, in_channels: int, num_classes: int, train_resolution: int | Sequence[int], dim: int = 2,
                 d_model: int = 64, n_layers: int = 4, layer: LayerSpec = S4ND_LAYER, stem: str = "pixel",
                 patch_size: int = 2, ff_expand: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        spec = mixer_spec(layer)
        self.dim, self.in_channels = dim, in_channels
        self.train_size = as_sizes(train_resolution, dim)
        self.stem = Stem(stem, in_channels, d_model, dim, self.train_size, patch_size)
        self.train_grid = self.stem.grid(self.train_size)
        blocks = []
        for _ in range(n_layers):
            mixer = make_mixer(spec, d_model=d_model, dim=dim, dropout=dropout, depthwise_only=False,
                               grid=self.train_grid)
            blocks.append(ResidualBlock(d_model, mixer, "layer", True, dropout))
            if ff_expand:
                blocks.append(ResidualBlock(d_model, FeedForward(d_model, ff_expand, dropout=dropout), "layer"))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def rate(self, sizes: Sequence[int]) -> tuple[float, ...]:
        """The per-axis rate of every S4ND layer for an input of ``sizes`` pixels per axis."""
        return _rates(self.train_grid, self.stem.grid(sizes))

    def forward(self, x: Tensor, rate: Rate | None = None) -> Tensor:
        """``x`` (B, *spatial, C) -> logits (B, classes); ``rate`` None derives it from the input size."""
        self._check(x)
        rate = self.rate(x.shape[1:-1]) if rate is None else rate
        z = self.stem(x)  # (B, *grid, d)
        for block in self.blocks:
            z, _ = block(z, rate=rate)
        return self.head(self.norm(z).mean(dim=tuple(range(1, self.dim + 1))))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block with an S4ND (or conv) depthwise mixer: ``x + gamma * FF(LN(mixer(x)))``."""

    def __init__(self, d_model: int, mixer: nn.Module, ff_expand: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.mixer, self.norm = mixer, nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_expand, dropout=dropout)
        self.gamma = nn.Parameter(torch.full((d_model,), 1e-2))  # layer scale

    def forward(self, x: Tensor, rate: Rate = 1.0) -> Tensor:
        z, _ = self.mixer(x, rate=rate)
        return x + self.gamma * self.ff(self.norm(z))[0]


class Downsample(nn.Module):
    """LN, antialiased bilinear resampling of the two image axes to half size (rounded), ``Linear(d_in, d_out)``.

    A filter-and-resample of the continuous signal rather than a strided 2x2 convolution, so that it
    means the same thing at every resolution.  (B, *S, d_in) -> (B, *S', d_out); time is not resampled.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.norm, self.proj = nn.LayerNorm(d_in), nn.Linear(d_in, d_out)

    @staticmethod
    def grid(sizes: Sequence[int]) -> tuple[int, ...]:
        return (*sizes[:-2], *(max(1, math.floor(s / 2 + 0.5)) for s in sizes[-2:]))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[1:-3]  # time axis of a video, if any
        z = rearrange(self.norm(x), "b ... h w d -> (b ...) d h w")
        z = F.interpolate(z, size=self.grid(x.shape[1:-1])[-2:], mode="bilinear", antialias=True, align_corners=False)
        z = rearrange(z, "(b t) d h w -> b t h w d", b=x.shape[0]) if lead else rearrange(z, "b d h w -> b h w d")
        return self.proj(z)


class ConvNeXtNet(_Backbone):
    """S4ND-ConvNeXt: stem, stages of :class:`ConvNeXtBlock` (depths, dims) joined by :class:`Downsample`,
    norm, mean pool, linear head.  Arguments as :class:`IsotropicNet`; ``depths`` and ``dims`` per stage."""

    def __init__(self, in_channels: int, num_classes: int, train_resolution: int | Sequence[int], dim: int = 2,
                 depths: Sequence[int] = (2, 2), dims: Sequence[int] = (32, 64), layer: LayerSpec = S4ND_LAYER,
                 stem: str = "pixel", patch_size: int = 2, ff_expand: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        spec = mixer_spec(layer)
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"model.depths and model.dims need one entry per stage, got {depths} and {dims}")
        self.dim, self.in_channels = dim, in_channels
        self.train_size = as_sizes(train_resolution, dim)
        self.stem = Stem(stem, in_channels, dims[0], dim, self.train_size, patch_size)
        self.downs = nn.ModuleList(Downsample(dims[i - 1], dims[i]) for i in range(1, len(dims)))
        grids = self.grids(self.train_size)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                ConvNeXtBlock(width, make_mixer(spec, d_model=width, dim=dim, dropout=dropout, depthwise_only=True,
                                                grid=grid), ff_expand, dropout)
                for _ in range(depth)
            )
            for depth, width, grid in zip(depths, dims, grids)
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)
        self.train_grids = self.grids(self.train_size)

    def grids(self, sizes: Sequence[int]) -> list[tuple[int, ...]]:
        """The grid of every stage for an input of ``sizes`` pixels per axis."""
        grids = [self.stem.grid(sizes)]
        for _ in self.downs:
            grids.append(Downsample.grid(grids[-1]))
        return grids

    def rate(self, sizes: Sequence[int]) -> list[tuple[float, ...]]:
        """The per-axis rate of every stage's S4ND layers for an input of ``sizes`` pixels per axis."""
        return [_rates(t, g) for t, g in zip(self.train_grids, self.grids(sizes))]

    def forward(self, x: Tensor, rate: Rate | None = None) -> Tensor:
        """``x`` (B, *spatial, C) -> logits (B, classes); ``rate`` None derives it per stage from the input size."""
        self._check(x)
        rates = self.rate(x.shape[1:-1]) if rate is None else [rate] * len(self.stages)
        z = self.stem(x)
        for i, (stage, stage_rate) in enumerate(zip(self.stages, rates)):
            if i:
                z = self.downs[i - 1](z)
            for block in stage:
                z = block(z, rate=stage_rate)
        return self.head(self.norm(z).mean(dim=tuple(range(1, self.dim + 1))))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
