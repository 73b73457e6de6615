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

import torch
from torch import Tensor, nn

from ssmcore.init import log_dt_init
from ssmcore.layers.s4d import DiagonalConvLayer

VARIANTS = ("dlr", "dlr_imag")


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
        dt_min, dt_max: "omega" init: ``rho^2 = dt / 2`` with ``dt`` log-uniform per feature.  Modes
            that barely decay (``dt_min`` far below 1e-3) make float32 kernels lose phase accuracy
            at lags beyond ~1e3 (``l * theta`` is rounded in float32), hence the default 1e-3.
        (the rest as :class:`ssmcore.layers.base.SSMLayer`)
    """

    output_scale = 1.0
    ssm_parameter_names = ("rho", "theta")

    def __init__(
        self,
        d_model: int,
        d_state: int = 1024,
        channels: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        variant: str = "dlr",
        real_W: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        activation: str | None = "gelu",
        postact: str | None = "glu",
    ) -> None:
        super().__init__(d_model, d_state, channels, bidirectional, dropout, activation, postact)
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.variant, self.real_W = variant, real_W
        H, N = d_model, d_state
        theta = 2 * math.pi * torch.arange(N, dtype=torch.float64) / N  # "omega" init
        self.theta = nn.Parameter(theta.float().repeat(H, 1))  # (H, N)
        if variant == "dlr":
            rho = torch.sqrt(torch.exp(log_dt_init(H, dt_min, dt_max)) / 2)  # -rho^2 = -dt / 2
            self.rho = nn.Parameter(rho.float()[:, None].repeat(1, N))  # (H, N)
        else:
            self.register_parameter("rho", None)
        if real_W:
            self.W = nn.Parameter(torch.randn(self.n_kernels, H, N) / math.sqrt(N))
        else:
            W = torch.randn(self.n_kernels, H, N, dtype=torch.complex64) / math.sqrt(N)
            self.W = nn.Parameter(torch.view_as_real(W))  # (n_kernels, H, N, 2)

    def eigenvalues(self) -> Tensor:
        """``lambda`` (H, N) complex: ``-rho^2 + i theta`` (``i theta`` for ``dlr_imag``)."""
        real = torch.zeros_like(self.theta) if self.rho is None else -self.rho.square()
        return torch.complex(real, self.theta)

    def output_weights(self) -> Tensor:
        """``W`` (n_kernels, H, N) complex."""
        if self.real_W:
            return torch.complex(self.W, torch.zeros_like(self.W))
        return torch.view_as_complex(self.W)

    def discrete(self, rate: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        log_dA = self.eigenvalues() * rate  # (H, N)
        return log_dA, torch.ones_like(log_dA), self.output_weights()

    @property
    def state_modes(self) -> int:
        return self.d_state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", variant={self.variant}, real_W={self.real_W}"
