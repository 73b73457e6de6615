"""The SaShiMi backbone for autoregressive waveform modelling.

Goel, Gu, Donahue, Re (2022), "It's Raw! Audio Generation with State-Space Models", Sec. 3:
an embedding of the 2**bits quantised levels, a multi-scale stack of residual (SSM block + FF
block) pairs -- ``n_layers`` pairs per tier, tiers joined by causal :class:`ssmcore.pooling.DownPool`
/ :class:`ssmcore.pooling.UpPool` whose up-pooling is shifted by one window so that no future
sample leaks -- and logits over the levels.  The stack is :class:`ssmcore.blocks.SequenceModel`
(its ``unet`` option is the U-Net variant with blocks on the way down too).

Token ``t`` of the input predicts token ``t + 1``: :func:`shift_right` turns a clip into the
teacher-forced input, with the silence level as the start token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from apps.common.layers import LayerSpec, causal_layer_spec, legacy_layer_spec
from ssmcore.blocks import SequenceModel

#: the paper's SSM: S4 (DPLR) with 64 states
SASHIMI_LAYER: LayerSpec = {"name": "s4", "d_state": 64}


def shift_right(tokens: Tensor, start: int) -> Tensor:
    """``tokens`` (B, L) -> the teacher-forced input (B, L): ``[start, tokens_0 .. tokens_{L-2}]``."""
    first = torch.full_like(tokens[:, :1], start)
    return torch.cat([first, tokens[:, :-1]], dim=1)


class SaShiMi(nn.Module):
    """Autoregressive SaShiMi over quantised audio: tokens (B, L) -> logits (B, L, n_classes).

    Args:
        n_classes: quantisation levels (256 for 8 bits).
        d_model: width of the outermost tier (64 in the paper).
        n_layers: residual (SSM block + FF block) pairs per tier (8 in the paper).
        pool: pooling factors, outermost first ([4, 4] in the paper); ``[]`` gives a flat stack.
        expand: width multiplier of each pooling stage (2).
        ff_expand: feed-forward expansion (2).
        layer: the SSM layer spec, any causal layer that steps (``{name: s4, d_state: 64}`` by default;
            ``s4d``, ``s5``, ``dlr``, ...); a bare name is that layer with its defaults.
        dropout: residual / layer dropout (``layer.dropout`` sets the layer's own).
        unet: the U-Net variant (blocks on the way down too).
        norm, prenorm: residual-block normalisation (layer norm, prenorm in the paper).
        d_state, layer_kwargs: the older spelling of layer options, folded into ``layer`` (kept while
            :class:`apps.sashimi.module.WaveformGenerator` passes them).
    """

    def __init__(
        self,
        n_classes: int = 256,
        d_model: int = 64,
        n_layers: int = 8,
        pool: Sequence[int] = (4, 4),
        expand: int = 2,
        ff_expand: int = 2,
        layer: LayerSpec | str = SASHIMI_LAYER,
        d_state: int | None = None,
        dropout: float = 0.0,
        unet: bool = False,
        norm: str = "layer",
        prenorm: bool = True,
        layer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(layer, str) and d_state is None:
            d_state = SASHIMI_LAYER["d_state"]  # a bare name keeps the paper's state size
        spec = causal_layer_spec(legacy_layer_spec(layer, layer_kwargs, d_state=d_state))
        self.n_classes, self.d_model, self.pool = n_classes, d_model, tuple(pool)
        self.embedding = nn.Embedding(n_classes, d_model)
        self.backbone = SequenceModel(
            d_model=d_model, n_layers=n_layers, layer=spec, d_output=n_classes, ff_expand=ff_expand, norm=norm,
            prenorm=prenorm, dropout=dropout, pool=self.pool, pool_expand=expand, unet=unet,
        )

    @property
    def frame(self) -> int:
        """The product of the pooling factors: the step period of the coarsest tier."""
        out = 1
        for p in self.pool:
            out *= p
        return out

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """``tokens`` (B, L) long -> ``(logits (B, L, n_classes), next_state)`` (convolution mode).

        ``next_state`` is None unless ``state`` (from :meth:`default_state` or a previous call)
        was given; chunks of a sequence passed with their state give the logits of the whole.
        """
        return self.backbone(self.embedding(tokens), state=state)

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The zero state of every layer and pooling buffer."""
        return self.backbone.default_state(batch_size, device=device or self.embedding.weight.device)

    def step(self, token: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One recurrent step: ``token`` (B,) long -> ``(logits (B, n_classes), next_state)``."""
        return self.backbone.step(self.embedding(token), state)
