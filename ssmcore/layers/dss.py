"""DSS: diagonal state spaces (Gupta, Gu, Berant 2022, "Diagonal State Spaces are as
Effective as Structured State Spaces").

Kernel ``K_k = 2 Re sum_i w_i g_i e^{k lambda_i dt}`` (one mode of each conjugate pair kept), with
the per-mode factor ``g_i`` of the paper's Proposition 1:

* ``version="exp"`` (DSS-exp): ``g_i = (e^{lambda_i dt} - 1) / lambda_i`` and ``Re lambda < 0`` (kept
  negative by a transform); this is ZOH with B = 1 and C = w.
* ``version="softmax"`` (DSS-softmax): ``g_i = 1 / (lambda_i s_i)`` with ``s_i = sum_{j<L} e^{j lambda_i dt}``,
  i.e. ``K = W Lambda^{-1} row-softmax(P)``, ``P_{ik} = k lambda_i dt``: each mode's powers are normalised
  over the kernel length like a softmax over positions, and there is no ZOH factor; ``lambda`` is
  unconstrained.  As in the paper, a mode with ``Re lambda > 0`` is evaluated from the far end
  (``e^{(k - L + 1) lambda dt}`` normalised by ``sum_m e^{-m lambda dt}``), so nothing overflows.

**The L-dependent normalisation.**  With ``l_max=None`` DSS-softmax normalises over the
input length L, as the paper does.  A recurrent view needs one fixed L: ``step()`` and state
passing normalise over ``l_max``, which must then be given; with ``l_max`` set, ``forward``
also normalises over ``l_max`` for every ``L <= l_max`` (its kernel is the ``l_max`` kernel
truncated), so ``step`` reproduces ``forward`` and chunked-with-state equals whole.  A mode with
``Re lambda > 0`` grows by ``e^{(l_max - 1) Re(lambda dt)}`` over the window; the recurrent
state carries it rescaled by ``e^{-(l_max - 1) lambda dt}``, which must stay representable
in the state's dtype (``step()`` says so clearly when it is not -- use ``.double()`` or a
smaller ``l_max``).

``rate`` multiplies ``dt`` (the same continuous system on a grid ``rate`` times coarser).  DSS-exp's
factor ``(e^{lambda dt} - 1) / lambda`` grows with the step; DSS-softmax has no such factor, but its
normalisation ``s_i`` is a sum over samples, about ``1 / rate`` times the rate-1 sum when the modes
decay within the window.  So in both versions a step of ``rate`` training steps carries about
``rate`` times the input (tested on smooth signals in ``tests/ssmcore/test_dss.py`` and
``tests/ssmcore/test_rate_continuous.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ssmcore.init import DIAGONAL_INITS, diagonal_init, inverse_real_transform, log_dt_init, real_transform
from ssmcore.kernels import vandermonde_kernel
from ssmcore.layers.s4d import DiagonalConvLayer

VERSIONS = ("exp", "softmax")


class DSS(DiagonalConvLayer):
    """DSS layer (exp or softmax); see the module docstring for the normalisation.

    ``d_state`` is the real state size N: N // 2 complex modes ``lambda`` (one of each
    conjugate pair) with output 2 Re(.); the recurrent state is (B, H, N // 2) complex.

    Args:
        version: ``exp`` or ``softmax``.
        init: initial ``lambda`` (``legs`` as in the paper, or any of :data:`ssmcore.init.DIAGONAL_INITS`).
        l_max: fixed normalisation length of DSS-softmax (needed for ``step`` and state passing).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).
    """

    ssm_parameter_names = ("log_dt", "Lambda_real", "Lambda_imag")

    def __init__(
        self,
        d_model: int,
        *,
        version: str = "exp",
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        l_max: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, **kwargs)
        d_state = self.d_state
        if version not in VERSIONS:
            raise ValueError(f"unknown DSS version {version!r}; choose one of {', '.join(VERSIONS)}")
        if init not in DIAGONAL_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(DIAGONAL_INITS)}")
        if l_max is not None and l_max < 1:
            raise ValueError(f"l_max must be positive, got {l_max}")
        self.version, self.l_max = version, l_max
        self.transform = "exp" if version == "exp" else "none"
        H, M = d_model, d_state // 2
        lam, _ = diagonal_init(init, d_state)
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max).float())
        self.Lambda_real = nn.Parameter(inverse_real_transform(lam.real, self.transform).float().repeat(H, 1))
        self.Lambda_imag = nn.Parameter(lam.imag.float().repeat(H, 1))
        W = torch.randn(self.n_kernels, H, M, dtype=torch.complex64)
        self.W = nn.Parameter(torch.view_as_real(W))  # (n_kernels, H, M, 2)

    def _modes(self, rate: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(lambda dt (H, M), g (H, M), w (n_kernels, H, M))`` with the mode factor ``g`` of Proposition 1:
        ``(e^{lambda dt} - 1) / lambda`` for DSS-exp, ``1 / lambda`` for DSS-softmax (whose softmax
        normalisation is applied by the callers)."""
        lam = torch.complex(real_transform(self.Lambda_real, self.transform), self.Lambda_imag)
        dt = torch.exp(self.log_dt) * rate
        dtlam = dt.unsqueeze(-1) * lam
        factor = torch.expm1(dtlam) / lam if self.version == "exp" else 1 / lam
        return dtlam, factor, torch.view_as_complex(self.W)

    def _norm_length(self, L: int) -> int:
        if self.l_max is None:
            return L
        if L > self.l_max:
            raise ValueError(f"DSS-softmax was built with l_max={self.l_max}; got a sequence of length {L}")
        return self.l_max

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        if self.version == "exp":
            return super().ssm_kernel(L, rate)
        dtlam, inv_lam, w = self._modes(rate)
        Ln = self._norm_length(L)
        grows = dtlam.real > 0
        log_z = torch.where(grows, -dtlam, dtlam)  # Re log_z <= 0 for every mode
        # sum_{m<Ln} e^{m log_z}; the limit Ln where log_z == 0
        norm = torch.where(log_z == 0, torch.full_like(log_z, Ln), torch.expm1(Ln * log_z) / torch.expm1(log_z))
        coef = w * inv_lam / norm  # (n_kernels, H, M)
        zero = torch.zeros((), dtype=coef.dtype, device=coef.device)
        decaying = torch.where(grows, zero, coef)
        growing = torch.where(grows, coef, zero)
        if Ln != L:
            # the growing modes are anchored at Ln - 1: e^{(k - Ln + 1) dtlam} = e^{(Ln - 1 - k) log_z}
            growing = growing * torch.exp((Ln - L) * log_z)
        K = vandermonde_kernel(torch.stack([decaying, growing]), log_z, L)  # (2, n_kernels, H, L)
        return self.output_scale * (K[0] + K[1].flip(-1))

    def discrete(self, rate: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        dtlam, factor, w = self._modes(rate)
        if self.version == "exp":
            return dtlam, factor, w
        if self.l_max is None:
            raise ValueError(
                "DSS-softmax normalises over the sequence length; step() and state passing need a fixed "
                "one: build the layer with l_max=<length>"
            )
        Ln = self.l_max
        grows = dtlam.real > 0
        log_z = torch.where(grows, -dtlam, dtlam)
        norm = torch.where(log_z == 0, torch.full_like(log_z, Ln), torch.expm1(Ln * log_z) / torch.expm1(log_z))
        # growing modes: the state is carried rescaled by e^{-(Ln - 1) dtlam}, folded into dB
        rescale = torch.where(grows, torch.exp((Ln - 1) * log_z), torch.ones_like(log_z))
        if bool((rescale == 0).any()):
            worst = ((Ln - 1) * dtlam.real).max().item()
            raise ValueError(
                f"DSS-softmax has a mode growing by e^{worst:.0f} over l_max={Ln} steps, beyond what "
                f"{rescale.dtype} can carry in a recurrent state; use layer.double() or a smaller l_max"
            )
        return dtlam, factor / norm * rescale, w
