"""Residual blocks, feed-forward and the :class:`SequenceModel` backbone (pooling: :mod:`ssmcore.pooling`).

Every module here follows the layer contract of :mod:`ssmcore.layers.base`::

    y, next_state = module(x, state=None, rate=1.0)    # x, y: (B, L, H)
    state = module.default_state(batch_size, device)
    y_t, state = module.step(x_t, state)                # x_t, y_t: (B, H)

so blocks nest inside blocks and step through a whole stack.  The backbone is the
deep S4 model (Gu, Goel, Re 2021, "Efficiently Modeling Long Sequences with Structured
State Spaces": residual SSM blocks + position-wise feed-forward) and, with ``pool``,
the SaShiMi U-Net (Goel, Gu, Donahue, Re 2022, "It's Raw! Audio Generation with
State-Space Models", Sec. 3.2: strided down-pooling, causal up-pooling, skip connections).

Pooling in step mode: a :class:`DownPool` buffers ``pool`` inputs and returns ``None``
in between (``(None, state)``), emitting one pooled vector on every ``pool``-th step.
An :class:`UpPool` holds a buffer of pending outputs and emits one per step; it takes
an input (not ``None``) exactly on the step where its buffer runs empty, which is the
step where the matching DownPool emits.  Pooling states are the same objects in
``forward`` and ``step``, so a sequence may be consumed by any mix of chunked forward
calls (of any length) and steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmcore.layers.base import make_activation
from ssmcore.pooling import DownPool, UpPool
from ssmcore.registry import make_layer, sequence_defaults

__all__ = ["FeatureNorm", "FeedForward", "ResidualBlock", "SequenceModel", "unet_step"]

NORMS = ("layer", "batch", "none")


def unet_step(
    n_levels: int,
    x: Tensor,
    tier: Callable[[tuple, Tensor], Tensor],
    down: Callable[[int, Tensor], Tensor | None],
    up: Callable[[int, Tensor | None], Tensor],
) -> Tensor:
    """One recurrent step through a SaShiMi U-Net of ``n_levels`` pooling levels: the traversal, once.

    ``tier(key, x)`` runs a stack of blocks (``key`` as in :meth:`SequenceModel.tiers`); ``down(i, x)``
    feeds level ``i``'s DownPool and returns its output on the steps where it emits, else None (the
    levels below are then not stepped); ``up(i, x_or_None)`` returns level ``i``'s next UpPool output
    (taking the level below's output on the step where its buffer runs empty).  Per level on the way
    down: blocks (U-Net variant), skip, DownPool; the centre blocks with a skip around them; per level
    on the way up: UpPool + skip, blocks with a skip around them.  ``x`` (B, H) -> (B, H).
    """
    skips = []
    below: Tensor | None = x
    for i in range(n_levels):
        below = tier(("down_blocks", i), below)
        skips.append(below)
        below = down(i, below)
        if below is None:
            break
    if below is not None:
        centre = tier(("center",), below)
        below = centre + below if n_levels else centre
    for i in reversed(range(len(skips))):  # the levels that received a step
        x = up(i, below) + skips[i]
        below = tier(("up", i), x) + x
    return below


class FeatureNorm(nn.Module):
    """LayerNorm, BatchNorm or nothing over the feature axis of (B, L, H) or (B, H) tensors.

    BatchNorm normalises each feature over batch and length (``nn.BatchNorm1d`` on the
    contiguous (B * L, H) tensor: the same statistics as on the transposed (B, H, L) view,
    several times faster on a CPU).  ``step`` always uses the running statistics, so it
    equals ``forward`` in eval mode.  In training mode BatchNorm mixes statistics
    across time steps (and so is not strictly causal), as BatchNorm always does.
    """

    def __init__(self, d_model: int, kind: str = "layer") -> None:
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")
        self.kind = kind
        if kind == "layer":
            self.norm: nn.Module = nn.LayerNorm(d_model)
        elif kind == "batch":
            self.norm = nn.BatchNorm1d(d_model)
        else:
            self.norm = nn.Identity()

    def affine(self) -> tuple[Tensor, Tensor, float]:
        """``(weight (H,), bias (H,), eps)`` of the layer norm (``kind="layer"``), for fused steppers."""
        if self.kind != "layer":
            raise ValueError(f"affine() is the layer norm's; this norm is {self.kind!r}")
        return self.norm.weight, self.norm.bias, self.norm.eps

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, L, H) -> (B, L, H)."""
        if self.kind == "batch":
            y = self.norm(x.reshape(-1, x.shape[-1]))  # (B * L, H)
            return y.reshape(x.shape)
        return self.norm(x)

    def step(self, x_t: Tensor) -> Tensor:
        """``x_t`` (B, H) -> (B, H); BatchNorm uses its running statistics."""
        if self.kind == "batch":
            bn = self.norm
            return F.batch_norm(x_t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.norm(x_t)


class FeedForward(nn.Module):
    """Position-wise feed-forward ``Linear(H, eH) -> activation -> dropout -> Linear(eH, H)``.

    Pointwise in time, so its state is ``None``; it takes ``state`` and ``rate`` only to
    follow the layer contract.  ``x`` (B, L, H) -> (B, L, H); ``x_t`` (B, H) -> (B, H).
    """

    def __init__(self, d_model: int, expand: int = 2, activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        if expand < 1:
            raise ValueError(f"FeedForward expand must be >= 1, got {expand}")
        self.d_model = d_model
        self.net = nn.Sequential(
            nn.Linear(d_model, expand * d_model),
            make_activation(activation),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(expand * d_model, d_model),
        )

    #: position-wise, so per-step time steps ``dt`` change nothing
    has_dt = True

    def forward(self, x: Tensor, state: Any = None, rate: float = 1.0, dt: Tensor | None = None) -> tuple[Tensor, None]:
        return self.net(x), None

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> None:
        return None

    def step(self, x_t: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, None]:
        return self.net(x_t), None


class ResidualBlock(nn.Module):
    """``x + dropout(layer(norm(x)))`` (prenorm) or ``norm(x + dropout(layer(x)))`` (postnorm).

    Wraps any module obeying the layer contract (an SSM layer, :class:`FeedForward`, ...).

    Args:
        d_model: features H.
        layer: the wrapped module, (B, L, H) -> (B, L, H).
        norm: ``layer``, ``batch`` or ``none`` (see :class:`FeatureNorm`).
        prenorm: normalise the layer's input (True) or the block's output (False).
        dropout: dropout on the layer's output before the residual sum.
    """

    def __init__(
        self, d_model: int, layer: nn.Module, norm: str = "layer", prenorm: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.d_model, self.prenorm = d_model, prenorm
        self.layer = layer
        self.norm = FeatureNorm(d_model, norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, state: Any = None, rate: float = 1.0, dt: Tensor | None = None) -> tuple[Tensor, Any]:
        """``x`` (B, L, H) -> ``(y (B, L, H), next_state)``; an empty sequence passes through.

        ``dt`` (B, L): per-step time steps for a layer that takes them (``has_dt``; see
        :meth:`SequenceModel.forward`).
        """
        if x.shape[1] == 0:
            return x, state
        z = self.norm(x) if self.prenorm else x
        if dt is None:
            z, next_state = self.layer(z, state=state, rate=rate)
        else:
            z, next_state = self.layer(z, state=state, rate=rate, dt=dt)
        y = x + self.dropout(z)
        return (y if self.prenorm else self.norm(y)), next_state

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        return self.layer.default_state(batch_size, device=device)

    def step(self, x_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """``x_t`` (B, H) -> ``(y_t (B, H), next_state)``."""
        z = self.norm.step(x_t) if self.prenorm else x_t
        z, state = self.layer.step(z, state, rate=rate)
        y = x_t + self.dropout(z)
        return (y if self.prenorm else self.norm.step(y)), state


class SequenceModel(nn.Module):
    """Deep SSM backbone: encoder, residual SSM (+ feed-forward) blocks, final norm, decoder.

    Without ``pool`` this is the deep S4 model: ``n_layers`` times (SSM block [+ FF block]),
    all at width ``d_model``.  With ``pool = (p_1, ..., p_P)`` it is the SaShiMi U-Net:
    ``P`` :class:`DownPool` stages (length / p_i, width * ``pool_expand``), ``n_layers``
    blocks at the coarsest level with a skip around them, then per level on the way up an
    :class:`UpPool`, the skip from that level's input, ``n_layers`` blocks and a skip around
    them.  With a causal layer the whole model is causal and can be stepped.

    Args:
        d_model: width H of the outermost level.
        n_layers: SSM blocks per level.
        layer: the SSM layer as one value: its registry name (see :func:`ssmcore.make_layer`) or a spec
            mapping ``{"name": "s4d", "d_state": 64, ...}`` of the name and the layer's own arguments; a layer
            over N-D grids (``s4nd``) runs over the sequence axis (``dim: 1``) unless the spec sets ``dim``.
        d_input: if given, an encoder ``Linear(d_input, H)``; input (B, L, d_input).
        d_output: if given, a decoder ``Linear(H, d_output)``; output (B, L, d_output).
        ff_expand: expansion of the feed-forward block after each SSM block (0: none).
        norm: ``layer``, ``batch`` or ``none``.
        prenorm: pre- or post-norm residual blocks; the final norm is applied with prenorm only
            (postnorm blocks already end in a norm).
        dropout: residual dropout, also passed to the SSM layers (unless the layer spec sets its own
            ``dropout``) and feed-forward blocks.
        pool: SaShiMi pooling factors, outermost first; None for a flat stack.
        pool_expand: width multiplier of each pooling stage.
        unet: also put ``n_layers`` blocks on the way down, at each level before its DownPool (the
            U-Net variant of SaShiMi); the level's skip is then taken after those blocks.
        **layer_kwargs: more SSM layer arguments (``d_state``, ``bidirectional``, ...); the spec's win.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        layer: str | Mapping[str, Any] = "s4d",
        d_input: int | None = None,
        d_output: int | None = None,
        ff_expand: int = 2,
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        pool: Sequence[int] | None = None,
        pool_expand: int = 2,
        unet: bool = False,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        self.d_model, self.d_input, self.d_output = d_model, d_input, d_output
        self.pool = tuple(pool or ())
        self.unet = bool(unet and self.pool)

        spec = {"name": layer} if isinstance(layer, str) else dict(layer)
        if "name" not in spec:
            raise ValueError(f"a layer spec needs a name, e.g. {{'name': 's4d', 'd_state': 64}}; got {spec}")
        # a layer over N-D grids (S4ND) runs over the one sequence axis unless the spec says otherwise
        layer_options = {"dropout": dropout, **sequence_defaults(spec["name"]), **layer_kwargs,
                         **{k: v for k, v in spec.items() if k != "name"}}

        def stage(width: int) -> nn.ModuleList:
            blocks = []
            for _ in range(n_layers):
                ssm = make_layer(spec["name"], d_model=width, **layer_options)
                blocks.append(ResidualBlock(width, ssm, norm, prenorm, dropout))
                if ff_expand:
                    blocks.append(
                        ResidualBlock(
                            width, FeedForward(width, ff_expand, dropout=dropout), norm, prenorm, dropout
                        )
                    )
            return nn.ModuleList(blocks)

        self.encoder = nn.Linear(d_input, d_model) if d_input else nn.Identity()
        widths = [d_model * pool_expand**i for i in range(len(self.pool) + 1)]
        self.down = nn.ModuleList(DownPool(widths[i], p, pool_expand) for i, p in enumerate(self.pool))
        self.down_blocks = nn.ModuleList(
            stage(widths[i]) if self.unet else nn.ModuleList() for i in range(len(self.pool))
        )  # the U-Net variant's blocks before each DownPool
        self.center = stage(widths[-1])
        self.up = nn.ModuleList(
            nn.ModuleDict({"pool": UpPool(widths[i + 1], p, pool_expand), "blocks": stage(widths[i])})
            for i, p in enumerate(self.pool)
        )  # self.up[i] maps level i + 1 back to level i
        self.norm = FeatureNorm(d_model, norm if prenorm else "none")
        self.decoder = nn.Linear(d_model, d_output) if d_output else nn.Identity()

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> dict[str, list]:
        """Zero states: ``{"down": [...], "down_blocks": [[...], ...], "center": [...], "up": [(pool_state, [block
        states]), ...]}``."""
        return {
            "down": [m.default_state(batch_size, device) for m in self.down],
            "down_blocks": [[b.default_state(batch_size, device) for b in blocks] for blocks in self.down_blocks],
            "center": [b.default_state(batch_size, device) for b in self.center],
            "up": [
                (
                    s["pool"].default_state(batch_size, device),
                    [b.default_state(batch_size, device) for b in s["blocks"]],
                )
                for s in self.up
            ],
        }

    @staticmethod
    def _blocks(
        blocks: nn.ModuleList, x: Tensor, states: list | None, rate: float, dt: Tensor | None = None
    ) -> tuple[Tensor, list | None]:
        new = []
        for i, block in enumerate(blocks):
            x, s = block(x, state=None if states is None else states[i], rate=rate, dt=dt)
            new.append(s)
        return x, (None if states is None else new)

    @property
    def has_dt(self) -> bool:
        """Whether every block takes per-step time steps ``dt`` (irregular sampling; see :meth:`forward`)."""
        return all(getattr(block.layer, "has_dt", False) for _, blocks in self.tiers() for block in blocks)

    def check_dt(self, dt: Tensor, x: Tensor) -> None:
        """Raise ValueError unless ``dt`` (B, L) can drive this model on ``x`` (B, L, ...)."""
        if self.pool:
            raise ValueError("per-step time steps (dt) need a flat stack: this model pools (pool="
                             f"{list(self.pool)}); build it without pool")
        if not self.has_dt:
            from ssmcore.registry import dt_layer_names

            names = sorted({type(b.layer).__name__ for _, blocks in self.tiers() for b in blocks
                            if not getattr(b.layer, "has_dt", False)})
            raise ValueError(f"layer {', '.join(names)} cannot take per-step time steps (dt); "
                             f"choose one of: {', '.join(dt_layer_names())}")
        if dt.shape != x.shape[:2]:
            raise ValueError(f"dt must be (batch, length) = {tuple(x.shape[:2])}, got {tuple(dt.shape)}")
        if not torch.isfinite(dt).all() or (dt < 0).any():
            raise ValueError("dt must be finite and >= 0 (the time since the previous sample, in nominal steps)")

    def forward(self, x: Tensor, state: dict | None = None, rate: float = 1.0,
                dt: Tensor | None = None) -> tuple[Tensor, dict | None]:
        """``x`` (B, L, d_input or H) -> ``(y (B, L, d_output or H), next_state)``.

        ``next_state`` is None unless ``state`` was given; ``rate`` goes to every SSM layer.
        ``dt`` (B, L), for irregularly sampled sequences: the time since the previous sample in units of
        the nominal step (see :func:`ssmcore.blocks.time_steps`), passed to every layer; only layers that
        take it (``has_dt``: S5, S5-PTD) and a flat stack (no ``pool``) can, otherwise ValueError.
        """
        width = self.d_input or self.d_model
        if x.dim() != 3 or x.shape[-1] != width:
            raise ValueError(f"SequenceModel expects (batch, length, {width}), got {tuple(x.shape)}")
        if dt is not None:
            self.check_dt(dt, x)
        st = state
        x = self.encoder(x)
        skips, new_down, new_down_blocks = [], [], []
        for i, down in enumerate(self.down):
            x, s = self._blocks(self.down_blocks[i], x, None if st is None else st["down_blocks"][i], rate)
            new_down_blocks.append(s)
            skips.append(x)
            x, s = down(x, state=None if st is None else st["down"][i], rate=rate)  # (B, L_i+1, H_i+1)
            new_down.append(s)
        center_in = x
        x, new_center = self._blocks(self.center, x, None if st is None else st["center"], rate, dt)
        if self.pool:
            x = x + center_in
        new_up: list = [None] * len(self.up)
        for i in reversed(range(len(self.up))):
            stage = self.up[i]
            pool_state = None if st is None else st["up"][i][0]
            x, s = stage["pool"](x, state=pool_state, rate=rate, length=skips[i].shape[1])  # (B, L_i, H_i)
            x = x + skips[i]
            skip = x
            x, block_states = self._blocks(stage["blocks"], x, None if st is None else st["up"][i][1], rate)
            x = x + skip
            new_up[i] = (s, block_states)
        y = self.decoder(self.norm(x))
        if st is None:
            return y, None
        return y, {"down": new_down, "down_blocks": new_down_blocks, "center": new_center, "up": new_up}

    def tiers(self) -> list[tuple[tuple, nn.ModuleList]]:
        """Every stack of blocks with its key, in :meth:`default_state` order: ``("down_blocks", i)`` per
        level (empty unless ``unet``), ``("center",)``, ``("up", i)`` per level."""
        return ([(("down_blocks", i), blocks) for i, blocks in enumerate(self.down_blocks)]
                + [(("center",), self.center)]
                + [(("up", i), stage["blocks"]) for i, stage in enumerate(self.up)])

    @staticmethod
    def tier_state(state: dict, key: tuple) -> list:
        """The block states of the tier ``key`` (see :meth:`tiers`) in a model ``state``."""
        if key[0] == "up":
            return state["up"][key[1]][1]
        return state[key[0]] if len(key) == 1 else state[key[0]][key[1]]

    def step(self, x_t: Tensor, state: dict, rate: float = 1.0) -> tuple[Tensor, dict]:
        """One step through the whole stack: ``x_t`` (B, d_input or H) -> ``(y_t (B, d_output or H), state)``.

        Levels below a DownPool that did not emit this step are not stepped (:func:`unet_step`).
        """
        new = {"down": list(state["down"]), "down_blocks": [list(b) for b in state["down_blocks"]],
               "center": list(state["center"]), "up": [(p, list(b)) for p, b in state["up"]]}
        tiers = dict(self.tiers())

        def tier(key: tuple, x: Tensor) -> Tensor:
            states = self.tier_state(new, key)
            for j, block in enumerate(tiers[key]):
                x, states[j] = block.step(x, states[j], rate=rate)
            return x

        def down(i: int, x: Tensor) -> Tensor | None:
            y, new["down"][i] = self.down[i].step(x, new["down"][i])
            return y

        def up(i: int, x: Tensor | None) -> Tensor:
            y, pool_state = self.up[i]["pool"].step(x, new["up"][i][0])
            new["up"][i] = (pool_state, new["up"][i][1])
            return y

        y = unet_step(len(self.pool), self.encoder(x_t), tier, down, up)
        return self.decoder(self.norm.step(y)), new


def time_steps(times: Tensor, unit: float, first: float = 1.0) -> Tensor:
    """Per-step time steps ``dt`` (B, L) for :meth:`SequenceModel.forward` from time stamps ``times`` (B, L).

    ``dt[:, k] = (times[:, k] - times[:, k - 1]) / unit`` (``unit``: the nominal sampling interval, the
    step the layers' ``dt`` initialisation refers to); the first sample gets ``first``.
    """
    if unit <= 0:
        raise ValueError(f"unit must be positive, got {unit}")
    gaps = torch.diff(times, dim=-1) / unit
    if (gaps < 0).any():
        raise ValueError("time stamps must not decrease along the sequence")
    return torch.cat([torch.full_like(times[..., :1], first), gaps], dim=-1)
