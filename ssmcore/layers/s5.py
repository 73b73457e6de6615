"""S5: simplified state space layers (Smith, Warrington, Linderman 2022).

One multi-input multi-output diagonal SSM shared by all H features,

    x_k = Lambda_bar_k * x_{k-1} + B_bar_k u_k,    y_k = Re(C~ x_k) (2 Re with conjugate symmetry),

with ``Lambda`` (P,) complex, ``B~`` (P, H), ``C~`` (H, P), run with a parallel scan
(:func:`ssmcore.scan.linear_scan`).  ``Lambda`` and the eigenvectors ``V`` come from the
normal part of HiPPO-LegS ("HiPPO-N"), block-diagonal over ``blocks`` blocks; ``B~ = V^-1 B``
and ``C~ = C V`` for random ``B`` and ``C``.  Each state has its own step size, and a
per-step multiplier ``dt`` (B, L) discretises irregularly sampled sequences (paper Sec. 6.3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ssmcore.hippo import nplr
from ssmcore.init import log_dt_init
from ssmcore.layers.base import Recurrence, SSMLayer
from ssmcore.scan import complex_exp, linear_scan

DISCRETIZATIONS = ("zoh", "bilinear")


def hippo_n_blocks(P: int, blocks: int, conj_sym: bool) -> tuple[Tensor, Tensor, Tensor]:
    """HiPPO-N initialisation in ``blocks`` diagonal blocks.

    Returns ``(Lambda (M,), V (P, M), V_inv (M, P))`` complex128 with ``M = P // 2`` when
    ``conj_sym`` (one of each conjugate pair) else ``P``; ``V`` is block-diagonal with unitary
    blocks, so ``V_inv = V^*`` (the pseudo-inverse when only half the modes are kept).
    """
    if P % blocks:
        raise ValueError(f"d_state={P} must be divisible by blocks={blocks}")
    size = P // blocks
    if size % 2:
        raise ValueError(f"block size d_state / blocks = {size} must be even (HiPPO-N pairs conjugate modes)")
    block = nplr("legs", size, keep_half=conj_sym)
    lam, V = block["Lambda"], block["V"]  # (m,), (size, m)
    Lambda = lam.repeat(blocks)  # (M,)
    V_full = torch.block_diag(*[V] * blocks)  # (P, M)
    return Lambda, V_full, V_full.conj().T


class S5(SSMLayer):
    """S5 layer: MIMO diagonal SSM (parallel scan) + D skip + activation + dropout + output projection.

    ``d_state`` is the latent size P.  With ``conj_sym`` (default) only P // 2 complex modes
    are kept, one of each conjugate pair, and the output is 2 Re(C~ x); the recurrent state is
    (B, P // 2) complex (``(B, P)`` without ``conj_sym``).

    ``channels`` counts output heads: there are ``channels`` matrices C~ (H x M), each giving an
    (H,)-vector per step, so the SSM output is (B, channels, H, L) like every other layer.  With
    ``bidirectional`` a second scan runs over the reversed sequence with its own ``channels``
    C~ matrices and is added to the first; as in :func:`ssmcore.fftconv.two_sided`, the
    anti-causal part sees the inputs strictly after step k (the current input is counted once).

    Args:
        blocks: J, number of HiPPO-N diagonal blocks (``d_state / blocks`` even).
        conj_sym: keep one mode of each conjugate pair (output 2 Re).
        clip_eigs: clamp ``Re Lambda <= -1e-4`` (always stable); otherwise ``Re Lambda`` is free.
        disc: ``zoh`` or ``bilinear``.
        dt_min, dt_max: range of the log-uniform per-state step-size init.
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).

    ``forward(x, state=None, rate=1.0, dt=None)``: ``dt`` (B, L) multiplies every state's step at
    each position (irregular sampling: the time since the previous sample, in units of the
    nominal step); ``rate`` multiplies all steps.

    Recurrent mode: :meth:`recurrence` is MIMO (:class:`ssmcore.layers.base.Recurrence` with ``lam``
    (M,), ``b = B_bar`` (M, H), ``C`` = scale * C~ (channels, H, M)).
    """

    ssm_parameter_names = ("Lambda_re", "Lambda_im", "B", "log_step")
    can_step = True
    has_dt = True

    def __init__(
        self,
        d_model: int,
        *,
        blocks: int = 1,
        conj_sym: bool = True,
        clip_eigs: bool = True,
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, **kwargs)
        d_state = self.d_state
        if disc not in DISCRETIZATIONS:
            raise ValueError(f"unknown disc {disc!r}; choose one of {', '.join(DISCRETIZATIONS)}")
        self.disc, self.conj_sym, self.clip_eigs, self.blocks = disc, conj_sym, clip_eigs, blocks
        Lambda, V, V_inv = hippo_n_blocks(d_state, blocks, conj_sym)
        self._init_from_eigen(Lambda, V, V_inv, dt_min, dt_max)

    def _init_from_eigen(self, Lambda: Tensor, V: Tensor, V_inv: Tensor, dt_min: float, dt_max: float) -> None:
        """Parameters from an eigendecomposition ``(Lambda (M,), V (P, M), V_inv (M, P))``."""
        H, P, M = self.d_model, self.d_state, Lambda.shape[0]
        self.Lambda_re = nn.Parameter(Lambda.real.float())
        self.Lambda_im = nn.Parameter(Lambda.imag.float())
        B = torch.randn(P, H, dtype=torch.float64) / math.sqrt(H)  # lecun normal
        B_tilde = V_inv @ B.to(torch.complex128)  # (M, H)
        self.B = nn.Parameter(torch.view_as_real(B_tilde.to(torch.complex64)))  # (M, H, 2)
        C = torch.randn(self.n_kernels, H, P, dtype=torch.complex128) / math.sqrt(2 * P)
        C_tilde = C @ V  # (n_kernels, H, M)
        self.C = nn.Parameter(torch.view_as_real(C_tilde.to(torch.complex64)))  # (n_kernels, H, M, 2)
        self.log_step = nn.Parameter(log_dt_init(M, dt_min, dt_max).float())
        self.state_modes = M

    # ----------------------------------------------------------------- the SSM
    def eigenvalues(self) -> Tensor:
        """``Lambda`` (M,) complex, with ``Re Lambda <= -1e-4`` when ``clip_eigs``."""
        re = self.Lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.Lambda_re
        return torch.complex(re, self.Lambda_im)

    def discretize(self, step: Tensor) -> tuple[Tensor, Tensor]:
        """``(log Lambda_bar, B_bar / B~)`` for per-state steps ``step`` (..., M)."""
        Lambda = self.eigenvalues()
        dtA = step * Lambda
        if self.disc == "zoh":
            return dtA, torch.expm1(dtA) / Lambda
        denom = 1 - dtA / 2
        return torch.log((1 + dtA / 2) / denom), step / denom

    def ssm_forward(self, u: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        y, next_state = self._scan(rearrange(u, "b h l -> b l h"), state, rate, None)  # (B, L, C, H)
        return rearrange(y, "b l c h -> b c h l"), next_state

    def forward(self, x: Tensor, state: Any = None, rate: float = 1.0, dt: Tensor | None = None) -> tuple[Tensor, Any]:
        """``x`` (B, L, H) -> ``(y (B, L, H), next_state)``; ``dt`` (B, L) optional per-step multiplier."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"S5 expects (batch, length, {self.d_model}), got {tuple(x.shape)}")
        if state is not None and self.bidirectional:
            raise ValueError("state passing needs a causal layer: this one was built with bidirectional=True")
        if dt is not None and dt.shape != x.shape[:2]:
            raise ValueError(f"dt must be (batch, length) = {tuple(x.shape[:2])}, got {tuple(dt.shape)}")
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        y, next_state = self._scan(x, state, rate, dt)  # (B, L, C, H)
        y = y + self.D.to(y.dtype) * x.unsqueeze(2).to(y.dtype)
        return self.post(rearrange(y, "b l c h -> b l (c h)")), next_state

    def _scan(self, x: Tensor, state: Tensor | None, rate: float, dt: Tensor | None) -> tuple[Tensor, Any]:
        """The bare SSM on ``x`` (B, L, H) -> ``(y (B, L, C, H), next_state)``."""
        C_tilde = torch.view_as_complex(self.C)  # (n_kernels, H, M)
        step = torch.exp(self.log_step) * rate  # (M,)
        if dt is not None:
            step = step * dt.to(step.dtype)[..., None]  # (B, L, M)
        log_a, b_scale = self.discretize(step)
        # B~ u as one real matmul: (B, L, H) @ (H, 2M) -> (B, L, M) complex
        Bu = torch.view_as_complex(torch.einsum("blh,mhr->blmr", x.to(self.B.dtype), self.B).contiguous())
        a = complex_exp(log_a)  # (M,) or (B, L, M)
        b = b_scale * Bu  # (B, L, M)
        scale = 2.0 if self.conj_sym else 1.0
        xs = linear_scan(a, b, state, dim=1)  # (B, L, M)
        y = scale * self._readout(xs, C_tilde[: self.channels])  # (B, L, C, H)
        if self.bidirectional:
            # the decay from step k + 1 back to k spans the gap before k + 1: per-step a shifts by one
            a_rev = a if a.dim() == 1 else torch.cat([a[:, 1:], a[:, -1:]], dim=1).flip(1)
            xs_rev = linear_scan(a_rev, b.flip(1), dim=1).flip(1)  # state after u_{L-1} .. u_k
            xs_rev = torch.nn.functional.pad(xs_rev[:, 1:], (0, 0, 0, 1))  # only inputs after k
            y = y + scale * self._readout(xs_rev, C_tilde[self.channels :])
        next_state = xs[:, -1] if state is not None else None
        return y.to(x.dtype) if x.is_floating_point() else y, next_state

    @staticmethod
    def _readout(xs: Tensor, C_tilde: Tensor) -> Tensor:
        """``Re(C~ x)``: (B, L, M) complex x (C, H, M) complex -> (B, L, C, H) real, as a real matmul."""
        x_ri = rearrange(torch.view_as_real(xs), "b l m r -> b l (m r)")  # (B, L, 2M)
        C_ri = torch.stack([C_tilde.real, -C_tilde.imag], dim=-1)  # (C, H, M, 2)
        return torch.einsum("blk,chk->blch", x_ri, rearrange(C_ri, "c h m r -> c h (m r)"))

    # ----------------------------------------------------------------- recurrent mode
    def discrete_recurrence(self, rate: float = 1.0) -> Recurrence:
        log_a, b_scale = self.discretize(torch.exp(self.log_step) * rate)
        B_bar = b_scale[:, None] * torch.view_as_complex(self.B)  # (M, H)
        scale = 2.0 if self.conj_sym else 1.0
        C = scale * torch.view_as_complex(self.C)[: self.channels]  # (channels, H, M)
        return Recurrence(lam=torch.exp(log_a), b=B_bar, C=C, D=self.D.clone())

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        ref = self.log_step
        dtype = torch.complex128 if ref.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.state_modes, dtype=dtype, device=device or ref.device)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", blocks={self.blocks}, conj_sym={self.conj_sym}, disc={self.disc}"
