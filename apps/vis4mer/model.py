"""The ViS4mer decoder (Islam & Bertasius, "Long Movie Clip Classification with State-Space
Video Models", ECCV 2022, Sec. 3 and Fig. 2).

Frame tokens of a span (T frames x P tokens, flattened in time-major order: L = T P) go
through ``n_stages`` multi-scale stages.  Each stage at width d is

    x = x + Dropout(SSM(LayerNorm(x)))          # pre-LN residual SSM block
    x = GELU(Linear_{d -> d/2}(AvgPool_2(x)))   # halve the tokens and the width

so 3 stages take (B, 11820, 1024) to (B, 1477, 128); the tokens are then mean-pooled and a
linear head gives class logits (cross-entropy) or a regression value (MSE).  The SSM is any
:func:`ssmcore.make_layer` spec (``{name: s4, d_state: 64}`` as in the paper); ``mixer:
attention`` puts multi-head self-attention (torch ``scaled_dot_product_attention``) in its
place, the baseline of the paper's efficiency claim.  :class:`MeanPoolBaseline` is the
order-blind reference: mean of the tokens, then an MLP head.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from apps.common.layers import LayerSpec, layer_spec
from ssmcore import make_layer

MIXERS = ("ssm", "attention")
#: the paper's SSM: S4 with 64 states
VIS4MER_LAYER: LayerSpec = {"name": "s4", "d_state": 64}


class SelfAttention(nn.Module):
    """Multi-head self-attention with the layer contract's call: ``(x (B, L, H)) -> (y, None)``."""

    def __init__(self, d_model: int, heads: int = 8, dropout: float = 0.0, causal: bool = False) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} must be divisible by the {heads} attention heads")
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, state: Tensor | None = None, rate: float = 1.0) -> tuple[Tensor, None]:
        q, k, v = rearrange(self.qkv(x), "b l (three h e) -> three b h l e", three=3, h=self.heads)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal)
        return self.out(rearrange(y, "b h l e -> b l (h e)")), None


def halve_tokens(x: Tensor) -> Tensor:
    """AvgPool(2) over tokens: (B, L, D) -> (B, ceil(L / 2), D); an odd last token is averaged with itself."""
    if x.shape[1] % 2:
        x = F.pad(x, (0, 0, 0, 1), mode="replicate") if x.shape[1] > 1 else x.repeat(1, 2, 1)
    return reduce(x, "b (l two) d -> b l d", "mean", two=2)


class ViS4merStage(nn.Module):
    """One multi-scale stage: pre-LN SSM residual block, AvgPool(2) over tokens, Linear(d, d/2) + GELU.

    (B, L, d) -> (B, ceil(L / 2), d // 2).
    """

    def __init__(self, d_model: int, layer: LayerSpec = VIS4MER_LAYER, dropout: float = 0.1,
                 mixer: str = "ssm", heads: int = 8) -> None:
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"model.mixer: unknown {mixer!r}; choose one of {', '.join(MIXERS)}")
        self.norm = nn.LayerNorm(d_model)
        if mixer == "ssm":
            self.mixer = make_layer(layer, d_model=d_model)
        else:
            self.mixer = SelfAttention(d_model, heads)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(d_model, d_model // 2)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.mixer(self.norm(x))
        x = x + self.dropout(y)
        return F.gelu(self.down(halve_tokens(x)))


class ViS4merDecoder(nn.Module):
    """The multi-scale decoder over a span's frame tokens.

    Args:
        d_input: channels of the cached tokens; a Linear maps them to ``d_model`` when they differ.
        num_outputs: classes (logits) or 1 (regression).
        d_model: width of the first stage (1024 in the paper); each stage halves it.
        n_stages: stages (3 in the paper); ``d_model`` must be divisible by ``2 ** n_stages``.
        layer: the SSM layer spec (any registry layer; ``{name: s4, d_state: 64}`` by default).
        dropout: after each SSM block.  mixer: ``ssm`` or ``attention`` (benchmark baseline).

    Input (B, L, d_input) with L = frames x tokens per frame; output (B, num_outputs).
    """

    def __init__(self, d_input: int, num_outputs: int, d_model: int = 1024, n_stages: int = 3,
                 layer: LayerSpec = VIS4MER_LAYER, dropout: float = 0.1, mixer: str = "ssm",
                 heads: int = 8) -> None:
        super().__init__()
        if n_stages < 1 or d_model % (2 ** n_stages):
            raise ValueError(f"model.d_model {d_model} must be divisible by 2 ** n_stages = {2 ** n_stages}")
        self.input = nn.Linear(d_input, d_model) if d_input != d_model else nn.Identity()
        widths = [d_model // 2 ** i for i in range(n_stages)]
        spec = layer_spec(layer) if mixer == "ssm" else None
        self.stages = nn.ModuleList(
            ViS4merStage(d_model=w, layer=spec, dropout=dropout, mixer=mixer, heads=min(heads, w)) for w in widths)
        self.head = nn.Linear(d_model // 2 ** n_stages, num_outputs)

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """The input to the first stage and every stage's output: [(B, L, d), (B, L/2, d/2), ...]."""
        outputs = [self.input(x)]
        for stage in self.stages:
            outputs.append(stage(outputs[-1]))
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage_outputs(x)[-1].mean(dim=1))


class MeanPoolBaseline(nn.Module):
    """Order-blind baseline: mean of all tokens of a span, then a two-layer MLP head.

    (B, L, d_input) -> (B, num_outputs).  It sees which tokens occur, never when.
    """

    def __init__(self, d_input: int, num_outputs: int, d_model: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_input), nn.Linear(d_input, d_model), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(d_model, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.mean(dim=1))
