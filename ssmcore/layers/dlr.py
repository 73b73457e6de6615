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
from einops import rearrange
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

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        """``K_l = Re sum_n W_n exp(l rate lambda_n)``: (n_kernels, H, L).

        The same two-level split as :func:`ssmcore.kernels.vandermonde_kernel` (``l = q T + p``,
        one (C Q, 2N) x (2N, T) real matmul per feature), written with real arithmetic only: the
        powers are ``exp(-l rate rho^2) (cos, sin)(l rate theta)`` with the angle reduced modulo
        2 pi in float64, so long lags keep their phase in float32 and every op is vectorised.
        """
        Q, T = math.ceil(L / math.ceil(math.sqrt(L))), math.ceil(math.sqrt(L))
        H, N = self.theta.shape
        decay = torch.zeros_like(self.theta) if self.rho is None else self.rho.square() * rate  # (H, N)
        theta = self.theta.double() * rate
        W = self.output_weights()  # (C, H, N)

        def powers(exponents: Tensor) -> tuple[Tensor, Tensor]:
            mag = torch.exp(-exponents[:, None] * decay[:, None, :])  # (H, E, N)
            angle = torch.remainder(exponents.double()[:, None] * theta[:, None, :], 2 * math.pi).to(mag.dtype)
            return mag * torch.cos(angle), mag * torch.sin(angle)

        rdtype = self.theta.dtype
        coarse_re, coarse_im = powers(torch.arange(Q, dtype=rdtype) * T)  # (H, Q, N)
        fine_re, fine_im = powers(torch.arange(T, dtype=rdtype))  # (H, T, N)
        W_re, W_im = W.real[:, :, None, :], W.imag[:, :, None, :]  # (C, H, 1, N)
        left = torch.cat([W_re * coarse_re - W_im * coarse_im, -(W_re * coarse_im + W_im * coarse_re)], dim=-1)
        left = rearrange(left, "c h q n -> h (c q) n")  # (H, C*Q, 2N)
        right = rearrange(torch.cat([fine_re, fine_im], dim=-1), "h t n -> h n t")  # (H, 2N, T)
        K = torch.bmm(left, right)  # (H, C*Q, T)
        K = rearrange(K, "h (c q) t -> c h (q t)", q=Q)
        return self.output_scale * K[..., :L]

    @property
    def state_modes(self) -> int:
        return self.d_state

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        ref = self.theta
        dtype = torch.complex128 if ref.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.d_model, self.d_state, dtype=dtype, device=device or ref.device)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", variant={self.variant}, real_W={self.real_W}"
