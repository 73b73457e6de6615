"""Raw-waveform SSM classifiers for Speech Commands (S4 Sec. 4.4; S4D, S5, Liquid-S4 SC35).

The papers' model: a linear encoder of the 1-channel waveform, about 6 bidirectional SSM blocks
of width 128 with GLU outputs and BatchNorm (post-norm), mean pooling over time and a linear head.
Any registry layer fits (``model.layer: s4d | s4 | s5 | dlr ...``).  Optional average pooling
between blocks (``pool``) makes a CPU-sized variant.  A pooling window is a duration: ``p`` samples
at the training rate become ``p / rate`` samples at rate ``rate`` (16 at 16 kHz -> 8 at 8 kHz), so
the pooled sequence has the training resolution again and the blocks after the first pooling run
at rate 1; ``p / rate`` must be a whole number.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from apps.common.errors import UserError
from apps.common.layers import LayerSpec, layer_spec
from ssmcore.blocks import SequenceModel

POOL_MODES = ("mean", "abs")
#: the papers' SSM: a bidirectional S4D with 64 states (``bidirectional`` is true unless the spec says otherwise)
SPEECH_LAYER: LayerSpec = {"name": "s4d", "d_state": 64, "bidirectional": True}


class SpeechNet(nn.Module):
    """Deep bidirectional SSM over a waveform: ``x`` (B, L, d_input) -> logits (B, classes).

    Args:
        d_input: input channels (1 for a raw waveform, n_mfcc for MFCCs).
        num_classes: classes of the head.
        d_model, n_layers, ff_expand, norm, prenorm, dropout: the backbone (see :class:`ssmcore.blocks.SequenceModel`).
        layer: the SSM layer spec (``{name: s4d, d_state: 64, dt_min: ...}``; bidirectional unless it says otherwise).
        pool: average-pooling factor after each block (length ``n_layers``; None: no pooling).
        pool_mode: ``mean`` averages the features in each pooling window; ``abs`` averages their
            magnitude (rectify, then low-pass: an envelope detector, so a filter bank's band energies
            survive a pooling that a plain mean would average away).
        pool_expand: width multiplier at each pooling (SaShiMi's ``pool_expand``): the blocks after
            a pooling by > 1 are ``pool_expand`` times wider, entered through a linear map.  Shorter
            sequences then carry more features at the same cost per block.
    """

    def __init__(self, d_input: int, num_classes: int, d_model: int = 128, n_layers: int = 6,
                 layer: LayerSpec = SPEECH_LAYER, ff_expand: int = 0, norm: str = "batch", prenorm: bool = False,
                 dropout: float = 0.0, pool: list[int] | None = None, pool_mode: str = "mean",
                 pool_expand: int = 1) -> None:
        super().__init__()
        layer = layer_spec(layer, bidirectional=True)
        if pool_expand < 1:
            raise UserError(f"model.pool_expand must be >= 1, got {pool_expand}")
        if pool_mode not in POOL_MODES:
            raise UserError(f"model.pool_mode: unknown {pool_mode!r}; choose {' or '.join(POOL_MODES)}")
        self.pool_mode = pool_mode
        pool = list(pool) if pool else [1] * n_layers
        if len(pool) != n_layers or min(pool) < 1:
            raise UserError(f"model.pool needs {n_layers} factors >= 1 (one per layer), got {pool}")
        self.pool = pool
        # consecutive blocks without pooling between them share one SequenceModel stage
        stages, sizes, factors = nn.ModuleList(), [], []
        count = 0
        for i, p in enumerate(pool):
            count += 1
            if p > 1 or i == n_layers - 1:
                sizes.append(count)
                factors.append(p)
                count = 0
        width = d_model
        for j, n in enumerate(sizes):
            entry = d_input if j == 0 else (width if pool_expand > 1 else None)
            width_j = d_model * pool_expand**j
            stages.append(SequenceModel(d_model=width_j, n_layers=n, layer=layer, d_input=entry, ff_expand=ff_expand,
                                        norm=norm, prenorm=prenorm, dropout=dropout))
            width = width_j
        if not sizes:  # n_layers == 0: encoder only
            stages.append(SequenceModel(d_model=d_model, n_layers=0, layer=layer, d_input=d_input, norm=norm,
                                        prenorm=prenorm))
            factors.append(1)
        self.stages, self.factors = stages, factors
        self.head = nn.Linear(width, num_classes)

    @staticmethod
    def pool_window(p: int, rate: float) -> int:
        """The pooling window in samples at SSM ``rate`` for a window of ``p`` training-rate samples: ``p / rate``.

        Raises:
            UserError: ``p / rate`` is not a whole number (e.g. a window of 16 at rate 3).
        """
        window = p / rate
        if p == 1:
            return 1
        if abs(window - round(window)) > 1e-6 or round(window) < 1:
            raise UserError(f"model.pool window {p} (samples at the training rate) is {window:g} samples at rate "
                            f"{rate:g}: test at a sample rate that makes it whole, or choose pool factors "
                            f"divisible by the rate")
        return round(window)

    def features(self, x: Tensor, rate: float = 1.0) -> Tensor:
        """Penultimate features: ``x`` (B, L, d_input) -> mean over time of the last block (B, d_model).

        ``rate`` is the SSM rate of the input (training sample rate / input sample rate); each
        pooling window is ``p / rate`` samples, after which the sequence is back at the training
        resolution and later stages run at rate 1.
        """
        for stage, p in zip(self.stages, self.factors, strict=True):
            x, _ = stage(x, rate=rate)  # (B, L_i, H)
            if p > 1:
                window = self.pool_window(p, rate)
                if self.pool_mode == "abs":
                    x = x.abs()
                if window > 1:
                    x = rearrange(F.avg_pool1d(rearrange(x, "b l h -> b h l"), window, ceil_mode=True),
                                  "b h l -> b l h")
                rate = 1.0
        return x.mean(dim=1)

    def forward(self, x: Tensor, rate: float = 1.0) -> Tensor:
        """``x`` (B, L, d_input) -> logits (B, num_classes)."""
        return self.head(self.features(x, rate))
