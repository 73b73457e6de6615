"""Missingness masks of SSSD (Lopez Alcaraz & Strodthoff 2022, Sec. 4.1).

Every mask is a boolean (L, C) tensor with ``True`` = observed (given to the model as
conditioning) and ``False`` = to impute.  The four regimes of the paper:

- ``rm`` random missing: in each channel, ``k`` time steps chosen at random are missing;
- ``mnr`` missing not at random: in each channel, one contiguous block of ``k`` steps at a random place;
- ``bm`` blackout: one block of ``k`` steps missing in every channel at once;
- ``tf`` time-series forecasting: the last ``k`` steps of every channel.

``k`` is ``round(ratio * L)`` or an explicit ``length``.  ``k = L`` (ratio 1) hides everything:
unconditional generation, which every regime then reduces to.  Data-given missingness (NaN) is
separate: :func:`nan_mask` marks available entries and is and-ed with the sampled mask.

Where the blocks of ``mnr`` and ``bm`` may start (``alignment``):

- ``free`` (default): anywhere, ``start ~ U{0, ..., L - k}``: every block hides exactly ``k`` steps;
- ``aligned``: the published SSSD code's choice: the steps are cut into consecutive segments of ``k``
  (``[0, k), [k, 2k), ...``, the last one shorter when ``k`` does not divide ``L``) and one segment is
  drawn uniformly.  Blocks then start only at multiples of ``k``, and a short last segment is drawn as
  often as a full one: with ``L = 100, k = 90`` half the draws hide only 10 steps.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor

MASK_TYPES = ("rm", "mnr", "bm", "tf")
MASK_ALIGNMENTS = ("free", "aligned")


def missing_count(length: int, ratio: float | None = None, k: int | None = None) -> int:
    """The number of missing steps: ``k`` if given, else ``round(ratio * length)``; checked to lie in
    [0, length] (``length``: nothing observed, unconditional generation)."""
    if k is None:
        if ratio is None:
            raise ValueError("a mask needs a ratio or a length (model.mask_ratio or model.mask_length)")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"mask ratio must be in [0, 1] (1: unconditional generation), got {ratio}")
        k = int(round(ratio * length))
    if not 0 <= k <= length:
        raise ValueError(f"mask length must be in [0, {length}] for series of length {length}, got {k}")
    return k


def block_starts(length: int, k: int, alignment: str, generator: torch.Generator | None,
                 n: int) -> tuple[Tensor, Tensor]:
    """``n`` block starts (n,) and lengths (n,) for blocks of ``k`` missing steps (see the module docstring)."""
    if alignment == "free":
        return torch.randint(0, length - k + 1, (n,), generator=generator), torch.full((n,), k)
    segments = -(-length // k)  # ceil: the last segment may be shorter
    starts = torch.randint(0, segments, (n,), generator=generator) * k
    return starts, (length - starts).clamp(max=k)


def make_mask(kind: str, length: int, channels: int, ratio: float | None = None, k: int | None = None,
              generator: torch.Generator | None = None, alignment: str = "free") -> Tensor:
    """One (L, C) boolean mask of the given kind (``True`` = observed).

    Args:
        kind: ``rm``, ``mnr``, ``bm`` or ``tf``.
        length, channels: L and C.
        ratio: fraction of missing steps per channel (ignored when ``k`` is given).
        k: number of missing steps per channel.
        generator: torch random generator (reproducible masks).
        alignment: where ``mnr`` / ``bm`` blocks start: ``free`` or ``aligned`` (multiples of ``k``, as the
            published code; the last segment may be shorter than ``k``).
    """
    if kind not in MASK_TYPES:
        raise ValueError(f"unknown mask type {kind!r}; choose one of {', '.join(MASK_TYPES)}")
    if alignment not in MASK_ALIGNMENTS:
        raise ValueError(f"unknown mask alignment {alignment!r}; choose one of {', '.join(MASK_ALIGNMENTS)}")
    k = missing_count(length, ratio, k)
    mask = torch.ones(length, channels, dtype=torch.bool)
    if k == 0:
        return mask
    if kind == "rm":
        scores = torch.rand(length, channels, generator=generator)
        missing = scores.argsort(dim=0)[:k]  # (k, C): k random steps per channel
        mask.scatter_(0, missing, False)
    elif kind == "mnr":
        starts, sizes = block_starts(length, k, alignment, generator, channels)  # (C,), (C,)
        steps = torch.arange(length).unsqueeze(1)  # (L, 1)
        mask &= ~((steps >= starts) & (steps < starts + sizes))
    elif kind == "bm":
        starts, sizes = block_starts(length, k, alignment, generator, 1)
        start, size = int(starts[0]), int(sizes[0])
        mask[start:start + size] = False
    else:  # tf
        mask[length - k:] = False
    return mask


def batch_masks(kind: str, batch: int, length: int, channels: int, ratio: float | Sequence[float] | None = None,
                k: int | None = None, generator: torch.Generator | None = None, alignment: str = "free",
                shared: bool = False) -> Tensor:
    """(B, L, C) masks, one per series (``shared``: one for the whole batch, as the published training loop
    draws them); a list of ratios picks one at random per series (per batch when shared)."""
    ratios = list(ratio) if isinstance(ratio, Sequence) else [ratio]
    rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    if shared:
        return make_mask(kind, length, channels, rng.choice(ratios), k, generator, alignment).expand(batch, -1, -1)
    return torch.stack([make_mask(kind, length, channels, rng.choice(ratios), k, generator, alignment)
                        for _ in range(batch)])


def nan_mask(x: Tensor) -> Tensor:
    """``True`` where ``x`` holds a value, ``False`` at NaN (data-given missingness)."""
    return ~torch.isnan(x)
