"""DLR: diagonal linear RNNs (Gupta, Mehta, Berant 2022, "Simplifying and Understanding State
Space Models with Diagonal Linear RNNs").

No continuous system and no discretisation: the recurrence is directly
``x_k = exp(lambda) * x_{k-1} + u_k``, ``y_k = Re(W x_k)``, with ``lambda = -rho^2 + i theta``
(so ``|exp(lambda)| <= 1`` for any ``rho``), and the convolution kernel is

    K_k = Re sum_n W_n exp(k lambda_n),

a Vandermonde product (:func:`ssmcore.kernels.vandermonde_kernel`, chunked so that no
(H, N, L) tensor is built; L = 2^19 with N = 1024 runs on a CPU).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ssmcore.init import log_dt_init
from ssmcore.layers.s4d import DiagonalConvLayer

VARIANTS = ("dlr", "dlr_imag")
THETA_INITS = ("omega", "half")


class DLR(DiagonalConvLayer):
    """DLR layer: diagonal linear RNN as a convolution + D skip + activation + dropout + output projection.

    ``d_state`` is the number N of complex modes (default 1024; 4096 works too).  The angles
    ``theta_n = 2 pi n / N`` cover the whole circle, so conjugate modes are both present and
    no pairing is exploited: the output is ``Re(W x)`` (``output_scale = 1``) and the
    recurrent state is (B, H, N) complex.

    ``rate`` multiplies ``lambda``: ``exp(rate * lambda)`` per step, i.e. a layer trained on one
    sampling rate reads input sampled ``rate`` times more sparsely (like ``dt * rate`` in S4D).

    Args:
        variant: ``dlr`` (``lambda = -rho^2 + i theta``, both trained) or ``dlr_imag``
            (``lambda = i theta``: no decay, only the angles are trained).
        real_W: real output weights W (the paper's real-W ablation) instead of complex.
        dt_min, dt_max: "omega" init: ``rho^2 = dt / 2`` with ``dt`` log-uniform per feature.
        theta_init: ``omega`` (``theta_n = 2 pi n / N``, the paper's) or ``half`` (``theta_n = pi n / N``).
            The output is ``Re(W x)``, so a mode at ``2 pi - theta`` only repeats the one at ``theta``
            (conjugated); ``half`` puts all N modes on distinct frequencies, the real Fourier basis of
            period 2N, which represents any kernel of length up to 2N (e.g. a shift by ``d < 2N``).
        W_scale: when given, ``W = W_scale * W'`` with the trained ``W'`` initialised standard normal,
            so that optimiser steps on W are relative to ``W_scale`` (the paper initialises W at 1/N);
            default: W itself is trained, initialised at ``1 / sqrt(N)``.
        d_state: N complex modes; listed here because DLR's default (1024) differs from the base's.
        **kwargs: the other shared layer arguments of :class:`ssmcore.layers.base.SSMLayer`
            (``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).
    """

    output_scale = 1.0
    ssm_parameter_names = ("rho", "theta")

    def __init__(
        self,
        d_model: int,
        d_state: int = 1024,
        *,
        variant: str = "dlr",
        real_W: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        theta_init: str = "omega",
        W_scale: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, d_state=d_state, **kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if theta_init not in THETA_INITS:
            raise ValueError(f"unknown theta_init {theta_init!r}; choose one of {', '.join(THETA_INITS)}")
        if W_scale is not None and W_scale <= 0:
            raise ValueError(f"W_scale must be positive, got {W_scale}")
        self.variant, self.real_W, self.theta_init, self.W_scale = variant, real_W, theta_init, W_scale
        H, N = d_model, d_state
        circle = 2 * math.pi if theta_init == "omega" else math.pi
        theta = circle * torch.arange(N, dtype=torch.float64) / N
        self.theta = nn.Parameter(theta.float().repeat(H, 1))  # (H, N)
        if variant == "dlr":
            rho = torch.sqrt(torch.exp(log_dt_init(H, dt_min, dt_max)) / 2)  # -rho^2 = -dt / 2
            self.rho = nn.Parameter(rho.float()[:, None].repeat(1, N))  # (H, N)
        else:
            self.register_parameter("rho", None)
        init_scale = 1.0 if W_scale is not None else 1 / math.sqrt(N)
        if real_W:
            self.W = nn.Parameter(torch.randn(self.n_kernels, H, N) * init_scale)
        else:
            W = torch.randn(self.n_kernels, H, N, dtype=torch.complex64) * init_scale
            self.W = nn.Parameter(torch.view_as_real(W))  # (n_kernels, H, N, 2)

    def eigenvalues(self) -> Tensor:
        """``lambda`` (H, N) complex: ``-rho^2 + i theta`` (``i theta`` for ``dlr_imag``)."""
        real = torch.zeros_like(self.theta) if self.rho is None else -self.rho.square()
        return torch.complex(real, self.theta)

    def output_weights(self) -> Tensor:
        """``W`` (n_kernels, H, N) complex."""
        W = self.W if self.W_scale is None else self.W * self.W_scale
        if self.real_W:
            return torch.complex(W, torch.zeros_like(W))
        return torch.view_as_complex(W)

    def discrete(self, rate: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        # at rate r a step spans r training steps: lambda * r, and r times the input (as in S4D's dB)
        log_dA = self.eigenvalues() * rate  # (H, N)
        return log_dA, torch.full_like(log_dA, rate), self.output_weights()

    @property
    def state_modes(self) -> int:
        return self.d_state

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", variant={self.variant}, real_W={self.real_W}, theta_init={self.theta_init}, W_scale={self.W_scale}"
        )
