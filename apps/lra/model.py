"""The LRA models: a deep SSM encoder over padded sequences, with the heads of each task.

The encoder is the deep S4 model (Gu, Goel, Re 2022, "Efficiently Modeling Long Sequences with
Structured State Spaces", Sec. 4 and App. D.2): an input encoder (a token embedding for ListOps /
Text / Retrieval, ``Linear(1, H)`` on the pixel value for Image / Pathfinder), ``n_layers`` residual
SSM blocks (each optionally followed by a position-wise feed-forward block), pre- or post-norm with
LayerNorm or BatchNorm, then one of three heads:

- :class:`SequenceClassifier`: mean (or last-token) pooling over the valid positions -> ``Linear``;
- :class:`RetrievalClassifier`: the LRA two-tower model (Tay et al. 2021, "Long Range Arena", Sec. 2.2):
  one shared encoder on both documents, pooled features ``a, b`` combined as ``[a, b, a * b, a - b]``
  and classified by an MLP;
- :class:`TokenClassifier`: logits at every position (DLR's ListOpsSubTrees and
  PathfinderSegmentation, Gupta, Mehta, Berant 2022, "Simplifying and Understanding State Space
  Models with Diagonal Linear RNNs", Sec. 5).

**Padding.** Sequences of a batch are padded at the end to the longest one, with a length vector.
Every block multiplies its layer's input by the length mask, so the padded positions are exactly
zero where a layer reads them: a causal layer never looks ahead, and the anti-causal half of a
bidirectional convolution then sees zeros beyond the valid part, as it would on the sequence alone.
BatchNorm takes its statistics over the valid positions only, and pooling averages them only.  A
padded batch therefore gives each sequence the output it gets alone (tested).  Layers that cannot
honour this (bidirectional Mega, whose attention has no key mask; bidirectional GSS, whose SSM reads
``GELU(W x + b)``; DSS-softmax without ``l_max``, normalised over the padded length) are refused with
one line when the lengths of a batch vary (:func:`layer_is_maskable`); with equal lengths they run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmcore.blocks import FeedForward
from ssmcore.registry import make_layer

NORMS = ("layer", "batch", "none")
POOLINGS = ("mean", "last")

#: bidirectional layers whose anti-causal half reads something other than zero at padded positions, and why
#: (a causal layer never looks ahead, so padding at the end cannot reach it)
UNMASKABLE_BIDIRECTIONAL: dict[str, str] = {
    "mega": "its attention reads every key of the padded sequence (it has no key mask)",
    "gss": "its inner SSM reads GELU(W x + b), which is not zero at padded positions",
}


def layer_is_maskable(spec: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the layer ``spec`` gives a padded sequence the output of the sequence alone, and if not why."""
    name = str(spec.get("name", "")).lower()
    if spec.get("bidirectional") and name in UNMASKABLE_BIDIRECTIONAL:
        return False, f"bidirectional {name}: {UNMASKABLE_BIDIRECTIONAL[name]}"
    if name == "dss" and spec.get("version", "exp") == "softmax" and spec.get("l_max") is None:
        return False, "DSS-softmax normalises its kernel over the padded length (set model.layer.l_max)"
    return True, ""


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B,)`` lengths -> ``(B, max_len)`` bool, True at the valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class MaskedNorm(nn.Module):
    """LayerNorm, BatchNorm or nothing over the features of (B, L, H); BatchNorm's statistics (and its running
    averages) come from the valid positions only when a mask is given."""

    def __init__(self, d_model: int, kind: str = "layer") -> None:
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"model.norm: unknown {kind!r}; choose one of {', '.join(NORMS)}")
        self.kind = kind
        self.norm: nn.Module = (nn.LayerNorm(d_model) if kind == "layer" else
                                nn.BatchNorm1d(d_model) if kind == "batch" else nn.Identity())

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, L, H), ``mask`` (B, L) bool or None -> (B, L, H); padded positions of a BatchNorm output are 0."""
        if self.kind != "batch":
            return self.norm(x)
        if mask is None or bool(mask.all()):
            return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)  # (B * L, H)
        y = x.new_zeros(x.shape)
        y[mask] = self.norm(x[mask])  # (valid tokens, H)
        return y


class MaskedBlock(nn.Module):
    """``x + dropout(layer(mask * norm(x)))`` (pre-norm) or ``norm(x + dropout(layer(mask * x)))`` (post-norm)."""

    def __init__(self, d_model: int, layer: nn.Module, norm: str, prenorm: bool, dropout: float) -> None:
        super().__init__()
        self.layer, self.prenorm = layer, prenorm
        self.norm = MaskedNorm(d_model, norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``x`` (B, L, H), ``mask`` (B, L) bool or None -> (B, L, H)."""
        z = self.norm(x, mask) if self.prenorm else x
        if mask is not None:
            z = z * mask[..., None].to(z.dtype)  # padded positions read as exactly 0
        z, _ = self.layer(z)
        y = x + self.dropout(z)
        return y if self.prenorm else self.norm(y, mask)


class LRAEncoder(nn.Module):
    """Input encoder + ``n_layers`` masked residual SSM blocks (+ feed-forward blocks) + final norm.

    Args:
        d_model: width H.
        n_layers: SSM blocks.
        layer: the layer spec, ``{"name": "s4d", "d_state": 64, "bidirectional": True, ...}`` (any registry layer).
        vocab_size: token vocabulary (id 0 is padding) for token inputs; None for pixel inputs.
        d_input: channels of a pixel input (``Linear(d_input, H)`` encoder); used when ``vocab_size`` is None.
        ff_expand: feed-forward expansion after each SSM block (0: none, as in the S4 LRA configs).
        norm: ``layer``, ``batch`` or ``none``; prenorm: pre- or post-norm blocks.
        dropout: residual dropout, also given to the layers unless the spec sets its own.

    ``x`` (B, L) long tokens or (B, L) / (B, L, d_input) float pixels, ``lengths`` (B,) or None
    -> ``(h (B, L, H), mask (B, L) bool or None)``.
    """

    def __init__(self, d_model: int, n_layers: int, layer: Mapping[str, Any], vocab_size: int | None = None,
                 d_input: int = 1, ff_expand: int = 0, norm: str = "layer", prenorm: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if d_model < 1 or n_layers < 1:
            raise ValueError(f"model.d_model and model.n_layers must be >= 1, got {d_model}, {n_layers}")
        spec = dict(layer)
        name = spec.pop("name")
        self.spec = {"name": name, **spec}
        options = {"dropout": dropout, **spec}
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0) if vocab_size else None
        self.d_input = d_input
        self.linear_in = None if vocab_size else nn.Linear(d_input, d_model)
        blocks: list[nn.Module] = []
        for _ in range(n_layers):
            blocks.append(MaskedBlock(d_model, make_layer(name, d_model=d_model, **options), norm, prenorm, dropout))
            if ff_expand:
                blocks.append(MaskedBlock(d_model, FeedForward(d_model, ff_expand, dropout=dropout), norm, prenorm,
                                          dropout))
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = MaskedNorm(d_model, norm if prenorm else "none")

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        L = x.shape[1]
        mask = None
        if lengths is not None and bool((lengths < L).any()):
            ok, why = layer_is_maskable(self.spec)
            if not ok:
                raise ValueError(f"model.layer.name: {self.spec['name']!r} cannot take a batch of sequences of "
                                 f"different lengths: {why}; choose another layer or data.batch_size 1")
            mask = length_mask(lengths, L)
        if self.embedding is not None:
            h = self.embedding(x)  # (B, L, H)
        else:
            h = self.linear_in(x[..., None] if x.dim() == 2 else x)  # (B, L, H)
        for block in self.blocks:
            h = block(h, mask)
        return self.final_norm(h, mask), mask


def pool(h: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """``h`` (B, L, H) -> (B, H): the mean over the valid positions, or the last valid position."""
    if how == "mean":
        if mask is None:
            return h.mean(dim=1)
        m = mask[..., None].to(h.dtype)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
    if how == "last":
        if mask is None:
            return h[:, -1]
        last = mask.long().sum(dim=1).clamp_min(1) - 1  # (B,)
        return h[torch.arange(h.shape[0], device=h.device), last]
    raise ValueError(f"model.pooling: unknown {how!r}; choose one of {', '.join(POOLINGS)}")


class SequenceClassifier(nn.Module):
    """:class:`LRAEncoder` -> masked pooling -> ``Linear(H, n_classes)``: ``(x, lengths)`` -> logits (B, n_classes)."""

    def __init__(self, n_classes: int, pooling: str = "mean", **encoder: Any) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling: unknown {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.encoder, self.pooling = LRAEncoder(**encoder), pooling
        self.head = nn.Linear(encoder["d_model"], n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, mask = self.encoder(x, lengths)
        return self.head(pool(h, mask, self.pooling))


class RetrievalClassifier(nn.Module):
    """LRA's two-tower matcher: one shared :class:`LRAEncoder` pooled into ``a`` and ``b``, then
    ``MLP([a, b, a * b, a - b])`` (4H -> H -> n_classes, GELU).  ``(x1, len1, x2, len2)`` -> logits (B, n_classes)."""

    def __init__(self, n_classes: int = 2, pooling: str = "mean", **encoder: Any) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling: unknown {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.encoder, self.pooling = LRAEncoder(**encoder), pooling
        d = encoder["d_model"]
        self.head = nn.Sequential(nn.Linear(4 * d, d), nn.GELU(), nn.Linear(d, n_classes))

    def embed(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """One document -> its pooled feature (B, H)."""
        h, mask = self.encoder(x, lengths)
        return pool(h, mask, self.pooling)

    def forward(self, x1: Tensor, len1: Tensor | None, x2: Tensor, len2: Tensor | None) -> Tensor:
        a, b = self.embed(x1, len1), self.embed(x2, len2)
        return self.head(torch.cat([a, b, a * b, a - b], dim=-1))  # (B, 4H) -> (B, n_classes)


class TokenClassifier(nn.Module):
    """:class:`LRAEncoder` -> ``Linear(H, n_classes)`` at every position: ``(x, lengths)`` -> (B, L, n_classes)."""

    def __init__(self, n_classes: int, **encoder: Any) -> None:
        super().__init__()
        self.encoder = LRAEncoder(**encoder)
        self.head = nn.Linear(encoder["d_model"], n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, _ = self.encoder(x, lengths)
        return self.head(h)


def token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` (B, L, C) against ``labels`` (B, L), ignoring the label -100 (and padding)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
