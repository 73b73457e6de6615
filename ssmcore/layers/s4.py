"""S4: the diagonal-plus-low-rank (DPLR) structured state space (Gu, Goel, Re 2021).

"Efficiently Modeling Long Sequences with Structured State Spaces", Sec. 3 and App. C.
The continuous system ``x' = A x + B u, y = C x`` has ``A = Lambda - P^* P`` (the NPLR form
of a HiPPO matrix, :func:`ssmcore.hippo.nplr`, written in the eigenbasis of its normal part).
It is discretised by the bilinear transform and its length-L kernel is read off the truncated
generating function at the roots of unity,

    K^(omega) = C~ (I - omega Abar)^{-1} Bbar = dt C~ [(1 - omega) I - dt (1 + omega)/2 A]^{-1} B,

with ``C~ = C (I - Abar^L)`` learned directly.  The Woodbury identity reduces the inverse of
``diag - P^* P`` to four Cauchy sums and an r x r solve per frequency
(:func:`ssmcore.kernels.dplr_resolvent_bilinear`, blocked in both passes: no (H, N, L) tensor and
no (H, L) Cauchy sums are kept for the backward pass) and an inverse real FFT gives the kernel.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ssmcore.hippo import MEASURES, low_rank_correction, nplr
from ssmcore.init import REAL_TRANSFORMS, inverse_real_transform, log_dt_init, real_transform
from ssmcore.kernels import dplr_resolvent_bilinear
from ssmcore.layers.base import ConvSSMLayer, Recurrence

#: LegT and FouT have Re Lambda = 0; it is clamped to this so that ``exp``/``softplus`` can represent it
MAX_REAL_LAMBDA = -1e-4
#: the reference length of C~ when ``step()`` comes before any ``forward()`` and no ``l_max`` was given
DEFAULT_REFERENCE_LENGTH = 1024


def conj_full(x: Tensor) -> Tensor:
    """``[x, conj(x)]`` along the last axis: the full conjugate-symmetric vector from its kept half."""
    return torch.cat([x, x.conj()], dim=-1)


def bilinear_gamma(L: int, dtype: torch.dtype, device: torch.device | str | None = None) -> Tensor:
    """``(1 + omega_k) / 2`` for ``omega_k = exp(-2 pi i k / L)``, ``k = 0 .. L // 2``: (L // 2 + 1,)."""
    half_angle = math.pi * torch.arange(L // 2 + 1, dtype=torch.float64, device=device) / L
    return torch.polar(torch.cos(half_angle), -half_angle).to(dtype)


def input_state(u: Tensor, Abar: Tensor, Bbar: Tensor) -> Tensor:
    """``x = sum_j Abar^(L-1-j) Bbar u_j``: the state a dense recurrence reaches from zero.

    Splits the reversed time index as ``m = q T + p`` (T a power of two near sqrt(batch L)):
    the columns ``Abar^p Bbar`` come from log2(T) doublings, one GEMM contracts them with the
    inputs, and a pairwise tree with ``Abar^T, Abar^2T, ...`` sums the Q partial states.

    Args:
        u: (B, H, L) real.
        Abar: (H, N, N) complex.
        Bbar: (H, N) complex.
    Returns:
        (B, H, N) complex, in Abar's dtype.
    """
    batch, H, L = u.shape
    N = Abar.shape[-1]
    T = min(1 << max(0, math.ceil(math.log2(max(1.0, math.sqrt(batch * L))))), 1 << math.ceil(math.log2(L)))
    Q = math.ceil(L / T)
    W, power = Bbar.unsqueeze(-1), Abar  # (H, N, 1); Abar^1
    while W.shape[-1] < T:
        W = torch.cat([W, power @ W], dim=-1)  # columns Abar^p Bbar, p < 2 * width
        power = power @ power
    # power == Abar^T now
    real = u.dtype if u.dtype == torch.float64 else torch.float32
    W_ri = torch.cat([W.real, W.imag], dim=1).to(real)  # (H, 2N, T)
    u_rev = torch.nn.functional.pad(u.flip(-1).to(real), (0, Q * T - L))  # (B, H, Q T)
    u_rev = u_rev.reshape(batch, H, Q, T).permute(1, 3, 0, 2).reshape(H, T, batch * Q)  # (H, T, B Q)
    partial = torch.bmm(W_ri, u_rev)  # (H, 2N, B Q)
    partial = torch.complex(partial[:, :N], partial[:, N:]).to(Abar.dtype).reshape(H, N, batch, Q)
    while partial.shape[-1] > 1:  # pairwise: y_2i + Abar^T y_2i+1, then T -> 2T
        if partial.shape[-1] % 2:
            partial = torch.nn.functional.pad(partial, (0, 1))
        partial = partial[..., 0::2] + torch.einsum("hnm,hmbq->hnbq", power, partial[..., 1::2])
        power = power @ power
    return partial[..., 0].permute(2, 0, 1)  # (B, H, N)


def _remember_reference_length(layer: nn.Module, incompatible_keys: Any = None) -> None:
    """After ``load_state_dict``: the loaded ``l_ref`` buffer's value as the Python int that traced graphs read."""
    if not layer.l_ref.is_meta:
        layer._l_ref = int(layer.l_ref)


class S4(ConvSSMLayer):
    """S4 layer: DPLR SSM + D skip + activation + dropout + output projection.

    ``d_state`` is the real state size N.  ``A = Lambda - P^* P`` is kept in the eigenbasis
    of its normal part, where the system is conjugate-symmetric: of each conjugate pair of
    modes only one is stored, so ``Lambda``, ``B``, ``C`` and each row of ``P`` have
    M = N // 2 complex entries and the full system is ``[x, conj(x)]``.  The output is
    ``y = 2 Re(C x)`` and the low-rank term acts on the full state (``P z = 2 Re(P x)``).
    The recurrent state is that kept half: (B, H, N // 2) complex.

    Stability: ``Re Lambda < 0`` through ``real_transform`` and ``Q = P`` tied, so
    ``A + A^* = 2 Re Lambda - 2 P^* P < 0``: A is Hurwitz and the bilinear ``Abar`` a contraction.

    ``C`` holds ``C~ = C (I - Abar^L0)`` for a reference length L0 (buffer ``l_ref``: ``l_max``
    if given, else fixed by the first ``kernel()``/``forward()``; by a ``step()`` before any
    forward it is fixed at 1024).  ``kernel(L)`` with ``L <= L0`` at rate 1 is computed at L0 and
    truncated (exact); any other length or rate converts C~ exactly with dense (H, N, N)
    matrices in complex128, ``C~_req = C~ (I - Abar^L0)^{-1} (I - Abar_rate^L)``.  ``step()`` uses
    the true ``C`` and an O(N r) Woodbury update (no diagonalisation of A), see
    :meth:`discrete_recurrence`.  Kernels and the recurrence are cached without autograd like every
    layer's (:meth:`ssmcore.layers.base.SSMLayer.cached`; ``l_ref`` is a buffer, so fixing it
    invalidates them too).

    Args:
        measure: HiPPO matrix ``legs``, ``legt`` or ``fout`` (:mod:`ssmcore.hippo`).
        rank: rank of ``P``; None takes the measure's (LegT 2, the others 1), any other value must match it.
        dt_min, dt_max: range of the log-uniform step-size init.
        real_transform: ``exp``/``softplus`` keep Re Lambda < 0; ``none`` leaves it free (no stability guarantee).
        l_max: reference length L0 of C~ (None: the first forward's length).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).
    """

    ssm_parameter_names = ("log_dt", "Lambda_real", "Lambda_imag", "P", "B")
    can_step = True

    def __init__(
        self,
        d_model: int,
        *,
        measure: str = "legs",
        rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        real_transform: str = "exp",
        l_max: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, **kwargs)
        d_state = self.d_state
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(MEASURES)}")
        if d_state % 2:
            raise ValueError(f"S4 needs an even d_state (conjugate pairs), got {d_state}")
        if real_transform not in REAL_TRANSFORMS:
            raise ValueError(f"unknown real_transform {real_transform!r}; choose one of {', '.join(REAL_TRANSFORMS)}")
        measure_rank = low_rank_correction(measure, 2).shape[0]
        if rank is not None and rank != measure_rank:
            raise ValueError(f"measure {measure!r} has a rank-{measure_rank} correction; got rank={rank}")
        if l_max is not None and l_max < 1:
            raise ValueError(f"l_max must be positive, got {l_max}")
        self.measure, self.rank, self.transform = measure, measure_rank, real_transform
        H = d_model
        init = nplr(measure, d_state)  # Lambda (M,), P (rank, M), B (M,)
        lam = init["Lambda"]
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max).float())
        re = inverse_real_transform(lam.real.clamp(max=MAX_REAL_LAMBDA), real_transform)
        self.Lambda_real = nn.Parameter(re.float().repeat(H, 1))  # (H, M)
        self.Lambda_imag = nn.Parameter(lam.imag.float().repeat(H, 1))  # (H, M)
        self.P = nn.Parameter(torch.view_as_real(init["P"].to(torch.complex64))[:, None].repeat(1, H, 1, 1))
        self.B = nn.Parameter(torch.view_as_real(init["B"].to(torch.complex64)).repeat(H, 1, 1))  # (H, M, 2)
        C_tilde = torch.randn(self.n_kernels, H, d_state // 2, dtype=torch.complex64)
        self.C = nn.Parameter(torch.view_as_real(C_tilde))  # C~ (n_kernels, H, M, 2)
        self.register_buffer("l_ref", torch.tensor(l_max or 0, dtype=torch.long))
        # the buffer's value as a Python int too: torch.compile / torch.export graphs cannot read a tensor's value
        self._l_ref = int(l_max or 0)
        self.register_load_state_dict_post_hook(_remember_reference_length)

    # ----------------------------------------------------------------- parameters
    def continuous(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(dt (H,), Lambda (H, M), P (rank, H, M), B (H, M), C~ (n_kernels, H, M))``."""
        lam = torch.complex(real_transform(self.Lambda_real, self.transform), self.Lambda_imag)
        P, B, C = (torch.view_as_complex(p) for p in (self.P, self.B, self.C))
        return torch.exp(self.log_dt), lam, P, B, C

    def reference_length(self, L: int | None = None) -> int:
        """L0, the length that C~ refers to; fixed to ``L`` (or 1024 when None) if still unset."""
        L0 = self._l_ref if torch.compiler.is_compiling() else int(self.l_ref)
        if L0 == 0:
            L0 = L if L is not None else DEFAULT_REFERENCE_LENGTH
            self.l_ref.fill_(L0)
        if L0 != self._l_ref:
            self._l_ref = L0
        return L0

    def dense_system(self, rate: float = 1.0, dtype: torch.dtype = torch.complex128) -> tuple[Tensor, Tensor, Tensor]:
        """The full conjugate-symmetric system as dense matrices ``(A, Abar, Bbar)``.

        ``A`` and the bilinear ``Abar = (I - dt/2 A)^{-1} (I + dt/2 A)`` are (H, N, N), ``Bbar =
        (I - dt/2 A)^{-1} dt B`` is (H, N), in the eigenbasis (state ``[x, conj x]``), step ``dt * rate``.
        """
        dt, lam, P, B, _ = self.continuous()
        dt = (dt * rate).to(dtype.to_real())[:, None, None]  # (H, 1, 1)
        P = conj_full(P).to(dtype)  # (rank, H, N)
        A = torch.diag_embed(conj_full(lam).to(dtype)) - torch.einsum("rhi,rhj->hij", P.conj(), P)
        eye = torch.eye(A.shape[-1], dtype=dtype, device=A.device)
        minus = eye - dt / 2 * A
        Abar = torch.linalg.solve(minus, eye + dt / 2 * A)
        Bbar = torch.linalg.solve(minus, dt[..., 0] * conj_full(B).to(dtype))
        return A, Abar, Bbar

    def true_C(self, dtype: torch.dtype = torch.complex128) -> Tensor:
        """``C = C~ (I - Abar^L0)^{-1}`` of the full system: (n_kernels, H, N)."""
        L0 = self.reference_length()
        _, Abar, _ = self.dense_system(1.0, dtype)
        eye = torch.eye(Abar.shape[-1], dtype=dtype, device=Abar.device)
        M_ref = eye - torch.linalg.matrix_power(Abar, L0)  # (H, N, N), binary powering
        C_tilde = conj_full(self.continuous()[4]).to(dtype).permute(1, 2, 0)  # (H, N, n_kernels)
        # C M_ref = C~  <=>  M_ref^T C^T = C~^T
        return torch.linalg.solve(M_ref.transpose(-1, -2), C_tilde).permute(2, 0, 1)

    def converted_C(self, L: int, rate: float = 1.0) -> Tensor:
        """``C~`` for length ``L`` at ``rate``: ``C (I - Abar_rate^L)``, kept half (n_kernels, H, M)."""
        C = self.true_C()
        _, Abar, _ = self.dense_system(rate)
        C = C - torch.einsum("chn,hnm->chm", C, torch.linalg.matrix_power(Abar, L))
        return C[..., : self.d_state // 2].to(self.continuous()[1].dtype)

    # ----------------------------------------------------------------- kernel
    def resolvent(self, C: Tensor, b: Tensor, dt: Tensor, L: int) -> Tensor:
        """``C [(1 - omega) I - dt (1 + omega)/2 A]^{-1} b`` at ``omega_k``, ``k = 0 .. L // 2``.

        Woodbury with ``D = diag(1 - omega - beta Lambda)``, ``beta = dt (1 + omega) / 2``:
        ``(D + beta P^* P)^{-1} = D^{-1} - beta D^{-1} P^* (I + beta P D^{-1} P^*)^{-1} P D^{-1}``.

        Args:
            C: (c, H, M) complex output vectors (kept halves).
            b: (n, H, M) complex input vectors (kept halves).
            dt: (H,) step sizes.
            L: the length whose roots of unity are used.
        Returns:
            (c, n, H, L // 2 + 1) complex.
        """
        _, lam, P, _, _ = self.continuous()
        return dplr_resolvent_bilinear(C, b, P, lam, dt, L)

    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        """The kernel (n_kernels, H, L); fixes ``l_ref`` first (so that a cached kernel sees its final value)."""
        if L >= 1:
            self.reference_length(L)
        return super().kernel(L, rate)

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        L0 = self.reference_length(L)
        dt, _, _, B, C = self.continuous()
        if rate == 1.0 and L <= L0:
            length = L0  # C~ refers to L0: compute there and truncate (exact)
        else:
            C, dt, length = self.converted_C(L, rate), dt * rate, L
        # dt C, not dt times the resolvent: the same product, and no (H, L) factor kept for dt's gradient
        k_hat = self.resolvent(dt[:, None] * C, B[None], dt, length).squeeze(1)  # (n_kernels, H, length // 2 + 1)
        k = torch.fft.irfft(k_hat, n=length)
        return k if length == L else k[..., :L]

    # ----------------------------------------------------------------- state
    def state_forward(self, u: Tensor, state: Tensor, rate: float = 1.0) -> tuple[Tensor, Tensor]:
        """``y_l = 2 Re(C Abar^(l+1) x0)`` for the incoming state (B, C, H, L), and the state after ``u``.

        The contribution is the kernel with ``B`` replaced by ``(I + dt/2 A) x0`` (so that
        ``Bbar`` becomes ``Abar x0``), one Cauchy evaluation batched over the sequences; the
        next state ``Abar^L x0 + sum_j Abar^(L-1-j) Bbar u_j`` uses dense powers (complex128).
        """
        batch, H, L = u.shape
        L0 = self.reference_length(L)
        dt, lam, P, _, C = self.continuous()
        x0 = state.to(lam.dtype)  # (B, H, M)
        dt_rate = dt * rate
        Px0 = 2 * torch.einsum("rhm,bhm->bhr", P, x0).real  # P z0 (real for a conjugate-symmetric z0)
        Ax0 = lam * x0 - torch.einsum("rhm,bhr->bhm", P.conj(), Px0.to(P.dtype))
        b = x0 + dt_rate[:, None] / 2 * Ax0  # (I + dt/2 A) x0, (B, H, M)
        if rate == 1.0 and L <= L0:
            C, length = C[: self.channels], L0
        else:
            C, length = self.converted_C(L, rate)[: self.channels], L
        y = torch.fft.irfft(self.resolvent(C, b, dt_rate, length), n=length)[..., :L]  # (C, B, H, L)
        _, Abar, Bbar = self.dense_system(rate)
        x_next = torch.einsum("hnm,bhm->bhn", torch.linalg.matrix_power(Abar, L), conj_full(x0).to(Abar.dtype))
        x_next = x_next + input_state(u, Abar, Bbar)
        return y.transpose(0, 1), x_next[..., : self.d_state // 2].to(state.dtype)

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        ref = self.log_dt
        dtype = torch.complex128 if ref.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.d_model, self.d_state // 2, dtype=dtype, device=device or ref.device)

    # ----------------------------------------------------------------- step
    def step_terms(self, rate: float = 1.0) -> dict[str, Tensor]:
        """The pieces of the O(N r) bilinear step at ``rate``: ``lam``, ``P``, ``dtB = dt B``, ``half = dt/2``,
        ``E = (1 - dt/2 Lambda)^{-1}``, ``S = (I + dt/2 P E P^*)^{-1}`` (H, r, r) and the true ``C``."""
        dt, lam, P, B, _ = self.continuous()
        M = self.d_state // 2
        C = self.true_C()[: self.channels, :, :M].to(lam.dtype)  # (C, H, M)
        half = (dt * rate / 2)[:, None]  # (H, 1)
        E = 1 / (1 - half * lam)  # D^{-1}, (H, M)
        PEP = 2 * torch.einsum("ihm,hm,jhm->hij", P, E, P.conj()).real  # P D^{-1} P^* (real), (H, r, r)
        eye = torch.eye(P.shape[0], dtype=PEP.dtype, device=PEP.device)
        S = torch.linalg.inv(eye + half[..., None] * PEP)  # (H, r, r)
        return {"lam": lam, "P": P, "dtB": (dt * rate)[:, None] * B, "half": half, "E": E, "S": S, "C": C}

    def discrete_recurrence(self, rate: float = 1.0) -> Recurrence:
        """The bilinear step ``x' = (I - dt/2 A)^{-1} ((I + dt/2 A) x + dt B u)``, ``y = 2 Re(C x')`` as a
        diagonal-plus-low-rank recurrence (:class:`ssmcore.layers.base.Recurrence`).

        With ``E = (1 - dt/2 Lambda)^{-1}``, Woodbury turns the inverse into ``lam = 2E - 1``,
        ``b = E dt B``, ``a_k = 4 P_k E``, ``c_k = 2 Re(P_k . b)``, ``G = dt/2 E P^* S``: exact, O(N r) per
        feature, no diagonalisation of A.
        """
        self.reference_length()
        t = self.step_terms(rate)
        E, P, half = t["E"], t["P"], t["half"]  # (H, M), (r, H, M), (H, 1)
        b = E * t["dtB"]
        G = torch.einsum("khm,hkj->jhm", half * E * P.conj(), t["S"].to(P.dtype))  # (r, H, M)
        return Recurrence(lam=2 * E - 1, b=b, C=2 * t["C"], D=self.D.clone(), a=4 * P * E, c=2 * (P * b).sum(-1).real, G=G)

    def recurrence(self, rate: float = 1.0) -> Recurrence:
        self.reference_length()  # fixed before the cache looks at the buffers
        return super().recurrence(rate)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", measure={self.measure}, rank={self.rank}, l_ref={int(self.l_ref)}"
