"""What the fused steppers run: a SaShiMi model as tiers of blocks described by tensors.

Both the fused torch stepper (:mod:`apps.sashimi.stepper`) and the native one
(:mod:`apps.sashimi.native`) read a model only through the public pieces gathered here: each SSM
layer's :meth:`ssmcore.layers.base.SSMLayer.recurrence` (its discrete diagonal, DPLR or MIMO terms,
cached per parameter version) and ``output_linear``, each norm's ``affine()``, and the backbone's
:meth:`ssmcore.blocks.SequenceModel.tiers` (the block stacks in state order).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from apps.sashimi.model import SaShiMi
from ssmcore.blocks import FeedForward, ResidualBlock
from ssmcore.layers.base import SSMLayer

#: block kinds: position-wise feed-forward, per-feature (diagonal or DPLR) SSM, MIMO SSM (state shared, S5)
KINDS = ("ff", "ssm", "mimo")


def block_kind(block: nn.Module) -> str | None:
    """``"ff"``, ``"ssm"`` or ``"mimo"`` for a block the fused steppers can run, else None."""
    if not isinstance(block, ResidualBlock) or not block.prenorm or block.norm.kind != "layer":
        return None
    layer = block.layer
    if isinstance(layer, FeedForward):
        return "ff"
    if not isinstance(layer, SSMLayer) or not (layer.can_step and layer.has_recurrence) or layer.bidirectional or layer.channels != 1:
        return None
    if not isinstance(layer.activation, nn.GELU) or layer.activation.approximate != "none" or layer.postact != "glu":
        return None
    with torch.no_grad():
        return "mimo" if layer.recurrence().mimo else "ssm"


def kinds(model: SaShiMi) -> set[str | None]:
    """The block kinds of ``model`` (None marks a block outside the fused forms)."""
    return {block_kind(b) for _, blocks in model.backbone.tiers() for b in blocks}


def _real_pair(z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return z.real.to(dtype).contiguous(), z.imag.to(dtype).contiguous()


def block_terms(block: ResidualBlock, dtype: torch.dtype) -> tuple[str, list[Tensor]]:
    """``(kind, tensors)`` of one block (see :func:`block_kind`), detached, in ``dtype`` (complex ones in
    its complex dtype):

    * ``ff``: ``[ln_w, ln_b, W1 (H, E), b1, W2 (E, H), b2]``;
    * ``ssm`` (real pairs of :class:`ssmcore.layers.base.Recurrence` at rate 1, channel 0):
      ``[ln_w, ln_b, lam_r, lam_i, b_r, b_i, a_r, a_i, c, G_r, G_i, C_r, C_i, D, W (H, 2H), bias]``
      (``a``, ``c``, ``G`` with r = 0 rows for a diagonal layer);
    * ``mimo``: ``[ln_w, ln_b, lam (M,), b (M, H), C (H, M), D, W (H, 2H), bias]``.
    """
    weight, bias, _ = block.norm.affine()
    head = [weight.detach().to(dtype), bias.detach().to(dtype)]
    layer = block.layer
    kind = block_kind(block)
    if kind == "ff":
        first, last = layer.net[0], layer.net[-1]
        return kind, head + [first.weight.detach().t().contiguous().to(dtype), first.bias.detach().to(dtype),
                             last.weight.detach().t().contiguous().to(dtype), last.bias.detach().to(dtype)]
    if kind is None:
        raise ValueError(f"block outside the fused forms: {block}")
    rec = layer.recurrence(1.0)
    out = layer.output_linear
    tail = [rec.D[0].detach().to(dtype), out.weight.detach().t().contiguous().to(dtype), out.bias.detach().to(dtype)]
    if kind == "mimo":
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return kind, head + [t.detach().to(cdtype).contiguous() for t in (rec.lam, rec.b, rec.C[0])] + tail
    lam = rec.lam
    if rec.rank:
        a, c, G = rec.a, rec.c, rec.G
    else:
        a = G = lam.new_zeros((0, *lam.shape))
        c = lam.real.new_zeros((0, lam.shape[0]))
    terms = [*_real_pair(lam, dtype), *_real_pair(rec.b, dtype), *_real_pair(a, dtype), c.detach().to(dtype),
             *_real_pair(G, dtype), *_real_pair(rec.C[0], dtype)]
    return kind, head + [t.detach() for t in terms] + tail


def tier_states(model: SaShiMi, state: dict) -> list[list[Any]]:
    """The block states of every tier of ``model`` (order of :meth:`ssmcore.blocks.SequenceModel.tiers`)."""
    bb = model.backbone
    return [bb.tier_state(state, key) for key, _ in bb.tiers()]


def pool_states(model: SaShiMi, state: dict) -> list[tuple[Tensor, Tensor]]:
    """Per level: ``(buffered DownPool inputs (B, k, H), pending UpPool outputs (B, j, H))``."""
    return [(state["down"][i], state["up"][i][0]) for i in range(len(model.backbone.pool))]
