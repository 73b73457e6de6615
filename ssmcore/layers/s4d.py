"""S4D: the diagonal structured state space (Gu, Gupta, Goel, Re 2022).

x'(t) = A x(t) + B u(t), y(t) = C x(t) with diagonal complex A, discretised by ZOH or
bilinear; the convolution kernel ``K_l = 2 Re sum_n C_n dB_n dA_n^l`` is a Vandermonde
product (:func:`ssmcore.kernels.vandermonde_kernel`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ssmcore.init import DIAGONAL_INITS, diagonal_init, inverse_real_transform, log_dt_init, real_transform
from ssmcore.kernels import vandermonde_kernel, vandermonde_transpose
from ssmcore.layers.base import ConvSSMLayer, Recurrence

DISCRETIZATIONS = ("zoh", "bilinear")


def discretize_diagonal(dtA: Tensor, disc: str, rate: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(log dA, dB / B)`` for a diagonal system with ``dt * A`` given (``dt`` already times ``rate``).

    ZOH: ``dB = (exp(dt A) - 1) / (dt A) * rate * B``; bilinear: ``dB = rate * B / (1 - dt A / 2)``.
    The input matrix is measured per step of the training grid: at rate 1 the factor ``dt`` of the
    textbook ``dB = (exp(dt A) - 1) / A * B`` is folded into ``C`` (a learned scale), so a layer's
    kernel does not shrink with its ``dt``.  At another ``rate`` a step spans ``rate`` training steps
    and carries ``rate`` times the input, as the continuous-time system does: the output of the layer
    on a signal sampled twice as coarsely (rate 2) matches its output on the fine one at the shared
    times, rather than being half of it.
    """
    if disc == "zoh":
        return dtA, torch.expm1(dtA) / dtA * rate
    if disc == "bilinear":
        denom = 1 - dtA / 2
        return torch.log((1 + dtA / 2) / denom), rate / denom
    raise ValueError(f"unknown discretization {disc!r}; choose one of {', '.join(DISCRETIZATIONS)}")


class DiagonalConvLayer(ConvSSMLayer):
    """Shared machinery of diagonal convolutional SSMs (S4D, DSS, S4-PTD, DLR).

    A subclass defines ``discrete(rate) -> (log_dA (H, M), dB (H, M), C (n_kernels, H, M))``.
    The kernel is ``K_l = scale * Re sum_m C_m dB_m exp(l log_dA_m)``; the state is
    (B, H, M) complex with x_k = dA x_{k-1} + dB u_k and y_k = scale * Re(C x_k) (its
    :meth:`recurrence`: ``lam = dA``, ``b = dB``, ``C = scale * C``, no low-rank terms).
    """

    can_step = True

    #: 2 for conjugate-symmetric modes (only one of each pair is kept), 1 otherwise
    output_scale: float = 2.0

    def discrete(self, rate: float) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        log_dA, dB, C = self.discrete(rate)
        return self.output_scale * vandermonde_kernel(C * dB, log_dA, L)

    def state_forward(self, u: Tensor, state: Tensor, rate: float = 1.0) -> tuple[Tensor, Tensor]:
        log_dA, dB, C = self.discrete(rate)
        L = u.shape[-1]
        state = state.to(C.dtype)
        # y_l += scale * Re sum_m C_m dA_m^{l+1} x_m
        weights = C * torch.exp(log_dA) * state.unsqueeze(1)  # (B, C, H, M)
        y = self.output_scale * vandermonde_kernel(weights, log_dA, L)  # (B, C, H, L)
        # x_L = dA^L x + sum_j dA^{L-1-j} dB u_j
        next_state = torch.exp(L * log_dA) * state + dB * vandermonde_transpose(u.flip(-1), log_dA)
        return y, next_state

    def discrete_recurrence(self, rate: float = 1.0) -> Recurrence:
        log_dA, dB, C = self.discrete(rate)
        return Recurrence(lam=torch.exp(log_dA), b=dB, C=self.output_scale * C[: self.channels], D=self.D.clone())

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        ref = self.D
        dtype = torch.complex128 if ref.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.d_model, self.state_modes, dtype=dtype, device=device or ref.device)

    @property
    def state_modes(self) -> int:
        return self.d_state // 2


class S4D(DiagonalConvLayer):
    """S4D layer: diagonal SSM + D skip + activation + dropout + output projection.

    ``d_state`` is the real state size N: N // 2 complex modes are kept, one of each
    conjugate pair, and the output is 2 Re(C x).  The recurrent state is (B, H, N // 2)
    complex.

    Initial scale: the paper draws ``C`` complex normal and discretises with the textbook
    ``dB = (exp(dt A) - 1) / A * B``.  This layer folds ``dt`` into ``C`` instead (so that ``rate``
    acts on ``dB`` alone, see :func:`discretize_diagonal`), and initialises ``C = dt * C_paper``:
    the initial kernel is the paper's, of l2 norm about 1 like S4's, rather than ``1 / dt`` times
    it.  Only the initialisation differs, so trained checkpoints load with unchanged kernels.

    Args:
        init: ``lin``, ``inv``, ``legs``, ``real`` or ``rand`` (see :func:`ssmcore.init.diagonal_init`).
        disc: ``zoh`` or ``bilinear``.
        dt_min, dt_max: range of the log-uniform step-size init.
        real_transform: ``exp``/``softplus`` keep Re A < 0; ``none`` leaves it free.
        B_init: ``init`` (from the chosen init), ``constant`` (ones) or ``random`` (complex normal).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).
    """

    ssm_parameter_names = ("log_dt", "A_real", "A_imag", "B")

    def __init__(
        self,
        d_model: int,
        *,
        init: str = "legs",
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        real_transform: str = "exp",
        B_init: str = "init",
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, **kwargs)
        d_state = self.d_state
        if init not in DIAGONAL_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(DIAGONAL_INITS)}")
        if disc not in DISCRETIZATIONS:
            raise ValueError(f"unknown disc {disc!r}; choose one of {', '.join(DISCRETIZATIONS)}")
        self.disc, self.transform = disc, real_transform
        H, M = d_model, d_state // 2
        A, B = diagonal_init(init, d_state)
        if B_init == "constant":
            B = torch.ones_like(B)
        elif B_init == "random":
            B = torch.randn(M, dtype=torch.complex128)
        elif B_init != "init":
            raise ValueError(f"unknown B_init {B_init!r}; choose init, constant or random")
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max).float())
        self.A_real = nn.Parameter(inverse_real_transform(A.real, real_transform).float().repeat(H, 1))
        self.A_imag = nn.Parameter(A.imag.float().repeat(H, 1))
        self.B = nn.Parameter(torch.view_as_real(B.to(torch.complex64)).repeat(H, 1, 1))  # (H, M, 2)
        C = torch.randn(self.n_kernels, H, M, dtype=torch.complex64)
        # The paper's C is complex normal and its dB carries dt; here dB does not (see
        # discretize_diagonal), so the initial C is dt times the paper's: the same initial kernel.
        C = C * torch.exp(self.log_dt.detach())[:, None]
        self.C = nn.Parameter(torch.view_as_real(C))  # (n_kernels, H, M, 2)

    def continuous(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(dt (H,), A (H, M), B (H, M), C (n_kernels, H, M))`` of the continuous system."""
        A = torch.complex(real_transform(self.A_real, self.transform), self.A_imag)
        return torch.exp(self.log_dt), A, torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def discrete(self, rate: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        dt, A, B, C = self.continuous()
        dtA = (dt * rate).unsqueeze(-1) * A
        log_dA, dB = discretize_diagonal(dtA, self.disc, rate)
        return log_dA, dB * B, C

    def extra_repr(self) -> str:
        return super().extra_repr() + f", disc={self.disc}"


