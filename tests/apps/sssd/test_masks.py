"""Masks: each regime hides the right number of steps in the right shape; NaN marks missing data."""

from __future__ import annotations

import pytest
import torch

from apps.sssd.masks import MASK_TYPES, batch_masks, make_mask, missing_count, nan_mask

L, C = 50, 6


@pytest.mark.parametrize("kind", MASK_TYPES)
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.8])
def test_every_mask_hides_round_ratio_times_length_per_channel(kind, ratio):
    mask = make_mask(kind, L, C, ratio, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (L, C) and mask.dtype == torch.bool
    assert ((~mask).sum(0) == round(ratio * L)).all()


def test_shapes_of_each_regime():
    g = torch.Generator().manual_seed(0)
    k = 12
    rm, mnr, bm, tf = (make_mask(kind, L, C, k=k, generator=g) for kind in ("rm", "mnr", "bm", "tf"))
    # mnr: one contiguous block per channel, at different places
    starts = []
    for c in range(C):
        missing = torch.where(~mnr[:, c])[0]
        assert (missing.diff() == 1).all()
        starts.append(int(missing[0]))
    assert len(set(starts)) > 1
    # bm: the same block in every channel
    assert (bm == bm[:, :1]).all()
    missing = torch.where(~bm[:, 0])[0]
    assert len(missing) == k and (missing.diff() == 1).all()
    # tf: the last k steps
    assert (~tf[L - k:]).all() and tf[: L - k].all()
    # rm: scattered, not one block, and differs across channels
    assert not (rm == rm[:, :1]).all()


def test_batch_masks_draw_ratios_per_series():
    masks = batch_masks("rm", 64, L, C, [0.2, 0.8], generator=torch.Generator().manual_seed(0))
    counts = set((~masks).sum(1)[:, 0].tolist())
    assert masks.shape == (64, L, C) and counts == {10, 40}


@pytest.mark.parametrize("kind", MASK_TYPES)
@pytest.mark.parametrize("alignment", ["free", "aligned"])
def test_ratio_one_hides_everything(kind, alignment):
    """Unconditional generation: every regime hides every entry at ratio 1 (or k = L)."""
    g = torch.Generator().manual_seed(0)
    assert not make_mask(kind, L, C, 1.0, generator=g, alignment=alignment).any()
    assert not make_mask(kind, L, C, k=L, generator=g, alignment=alignment).any()


def test_bad_ratio_or_length_is_rejected():
    with pytest.raises(ValueError, match="ratio"):
        missing_count(L, 1.01)
    with pytest.raises(ValueError, match="ratio"):
        missing_count(L, -0.1)
    with pytest.raises(ValueError, match="length"):
        make_mask("tf", L, C, k=L + 1)
    with pytest.raises(ValueError, match="unknown mask"):
        make_mask("xx", L, C, 0.5)


def test_nan_mask_marks_missing():
    x = torch.tensor([[1.0, float("nan")], [float("nan"), 2.0]])
    assert nan_mask(x).tolist() == [[True, False], [False, True]]
