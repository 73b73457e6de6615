"""GSS: the Gated State Space block (Mehta, Gupta, Cutkosky, Neyshabur 2022, "Long Range Language
Modeling via Gated State Spaces").

With ``sigma`` the activation (GELU in the paper), ``F = expand * H`` and ``E = ssm_width``::

    u = sigma(W1 x)                 (B, L, F)   the gate branch, at the expanded width
    v = sigma(W2 x)                 (B, L, E)   the reduced branch
    y = W4( u * W3 SSM(v) )         (B, L, H)

The SSM is a diagonal state space (``ssm="dss"``: DSS-exp, or ``"s4d"``) of width ``E`` with its D skip,
no activation and no projection of its own, and a **fixed step size Delta = 1**: at initialisation the
inner layer's log-uniform step ``dt`` is folded into its eigenvalues (``Lambda <- dt Lambda``, with the
output weights rescaled so that the kernel is exactly the inner layer's usual initial kernel) and
``dt`` becomes a constant buffer equal to 1; only ``Lambda`` (and W / B, C) are learned.  The residual connection and the normalisation of the paper's
block are the backbone's (:class:`ssmcore.blocks.ResidualBlock`), as for every layer.

``d_state`` is the inner SSM's (its real state size N: N // 2 complex modes per SSM feature); the
state is the inner SSM's, (B, E, N // 2) complex.

``rate``: the inner SSM's (Delta = rate): the same continuous system on a grid ``rate`` times coarser.

**Stepping.** The gates are position-wise, so ``step()`` is exact: the inner SSM's own step (its
:meth:`~ssmcore.layers.base.SSMLayer.recurrence`) between the projections, so ``can_step`` is True.
``has_recurrence`` is False, because GSS itself has no :class:`~ssmcore.layers.base.Recurrence`
(``recurrence()`` raises; the apps' fused steppers, which run Recurrence terms, treat a GSS block as
an opaque module and call its ``step()``); ``layer.ssm.recurrence()`` gives the inner terms.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ssmcore.init import inverse_real_transform, real_transform
from ssmcore.layers.base import SSMLayer
from ssmcore.layers.dss import DSS
from ssmcore.layers.s4d import S4D

INNER = {"dss": DSS, "s4d": S4D}


def fix_unit_step(layer: SSMLayer, dt: float = 1.0) -> None:
    """Fold a DSS / S4D layer's step size into its eigenvalues and fix it to ``dt``, keeping its kernel.

    ``Lambda <- (dt_0 / dt) Lambda`` per feature (``dt_0`` its current step); DSS's output weights W are
    scaled by ``dt_0 / dt`` as well (its kernel carries a factor 1 / Lambda), S4D needs nothing more
    (``dB`` depends on ``dt Lambda`` only).  ``log_dt`` becomes a buffer: no longer trained."""
    if isinstance(layer, DSS):
        real_name, imag_name = "Lambda_real", "Lambda_imag"
    elif isinstance(layer, S4D):
        real_name, imag_name = "A_real", "A_imag"
    else:
        raise TypeError(f"fix_unit_step takes a DSS or S4D layer, got {type(layer).__name__}")
    with torch.no_grad():
        scale = (torch.exp(layer.log_dt) / dt).unsqueeze(-1)  # (E, 1)
        real, imag = getattr(layer, real_name), getattr(layer, imag_name)
        real.copy_(inverse_real_transform(real_transform(real, layer.transform) * scale, layer.transform))
        imag.mul_(scale)
        if isinstance(layer, DSS):
            layer.W.mul_(scale.unsqueeze(-1))  # (n_kernels, E, M, 2)
    del layer.log_dt
    layer.register_buffer("log_dt", torch.full((layer.d_model,), math.log(dt)))
    layer.ssm_parameter_names = tuple(n for n in layer.ssm_parameter_names if n != "log_dt")


class GSS(SSMLayer):
    """GSS layer: gated state space with an expanded gate branch and a narrow SSM branch (see the module
    docstring for the equations, the fixed step and the stepping).

    Args:
        expand: F / H, the gate branch's expansion (3 in the paper).
        ssm_width: E, the SSM branch's width (default H // 4, at least 1).
        ssm: ``dss`` (DSS-exp, the paper's) or ``s4d``.
        dt: the fixed step size of the inner SSM (1 in the paper).
        ssm_options: further options of the inner layer (e.g. ``init``, ``dt_min``/``dt_max`` of the
            initial eigenvalue scale, ``disc`` for S4D).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer`: ``d_state`` (the
            inner SSM's), ``bidirectional`` (the inner SSM's), ``dropout`` (on the gated product, before
            W4), ``activation`` (sigma, of both branches; GELU by default), ``postact`` (W4: ``linear``
            by default as in the paper, ``glu`` or ``none`` when F == H); ``channels`` must be 1.
    """

    can_step = True  # exact step() through the inner SSM
    has_recurrence = False  # ... but no Recurrence of its own (see the module docstring)

    def __init__(
        self,
        d_model: int,
        *,
        expand: float = 3,
        ssm_width: int | None = None,
        ssm: str = "dss",
        dt: float = 1.0,
        ssm_options: dict | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("postact", "linear")
        super().__init__(d_model, **kwargs)
        if self.channels != 1:
            raise ValueError(f"GSS has one output channel per feature; got channels={self.channels}")
        if ssm not in INNER:
            raise ValueError(f"unknown GSS ssm {ssm!r}; choose one of {', '.join(INNER)}")
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        width = int(round(expand * d_model))
        ssm_width = ssm_width or max(1, d_model // 4)
        if width < 1 or ssm_width < 1:
            raise ValueError(f"expand and ssm_width must give positive widths, got {width} and {ssm_width}")
        self.expand_width, self.ssm_width, self.ssm_kind = width, ssm_width, ssm
        self.D = None  # the D skip is the inner SSM's
        self.gate_proj = nn.Linear(d_model, width)  # W1 (two GEMMs: slicing one [W1; W2] costs more in backward)
        self.ssm_in = nn.Linear(d_model, ssm_width)  # W2
        self.ssm = INNER[ssm](
            d_model=ssm_width, d_state=self.d_state, bidirectional=self.bidirectional,
            activation="identity", postact="none", **(ssm_options or {}),
        )
        fix_unit_step(self.ssm, dt)
        self.ssm_out = nn.Linear(ssm_width, width)  # W3
        if self.postact == "glu":  # W4
            self.output = nn.Sequential(nn.Linear(width, 2 * d_model), nn.GLU(dim=-1))
        elif self.postact == "linear":
            self.output = nn.Linear(width, d_model)
        else:
            if width != d_model:
                raise ValueError(f"postact='none' needs expand * d_model == d_model, got {width}")
            self.output = nn.Identity()

    def _branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.activation(self.gate_proj(x)), self.activation(self.ssm_in(x))  # (..., F), (..., E)

    def _gate(self, u: Tensor, s: Tensor) -> Tensor:
        return self.output(self.dropout(u * self.ssm_out(s)))

    def forward(self, x: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        """``x`` (B, L, H) -> ``(y (B, L, H), next_state)``; ``next_state`` is None unless ``state`` was given."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"GSS expects (batch, length, {self.d_model}), got {tuple(x.shape)}")
        u, v = self._branches(x)  # (B, L, F), (B, L, E)
        s, next_state = self.ssm(v, state=state, rate=rate)  # (B, L, E)
        return self._gate(u, s), next_state

    def step(self, x_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One exact step: ``x_t`` (B, H) -> ``(y_t (B, H), next_state)``, through the inner SSM's step."""
        u, v = self._branches(x_t)  # (B, F), (B, E)
        s, state = self.ssm.step(v, state, rate=rate)  # (B, E)
        return self._gate(u, s), state

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The inner SSM's zero state, (B, E, d_state // 2) complex."""
        return self.ssm.default_state(batch_size, device=device)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, expand_width={self.expand_width}, ssm={self.ssm_kind}, "
                f"ssm_width={self.ssm_width}, d_state={self.d_state}, bidirectional={self.bidirectional}")
